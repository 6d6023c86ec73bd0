"""shared.runtimes: exported ONNX / OpenVINO files and in-memory conversions agree with PyTorch at any
size, int8 files are told from float ones, and every wrong combination is a one-line ConfigError."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared import runtimes
from shared.errors import ConfigError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class _SkipNet(nn.Module):
    """Conv, GroupNorm, a strided branch brought back to the skip's size: the ops a U-Net exports."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.out = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.norm(self.inp(x)))
        d = F.relu(self.down(a))
        up = F.interpolate(d, size=a.shape[-2:], mode="bilinear", align_corners=False)
        return x + self.out(torch.cat([a, up], 1))


def _smooth(height: int, width: int, phase: float = 0.0) -> torch.Tensor:
    """A (1, 3, H, W) image in [-1, 1] of slow gradients, like a photo's sky or wall."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    channels = [torch.sin(3 * x + 2 * y + phase), torch.cos(2 * x - 3 * y + phase), 2 * x * y - 1 + 0.1 * phase]
    return (0.9 * torch.stack(channels)).clamp(-1, 1).unsqueeze(0)


SIZES = [(67, 45), (96, 80)]  # one file, two sizes, neither the export example's


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    model = _SkipNet().eval()
    folder = tmp_path_factory.mktemp("runtimes")
    example = torch.randn(1, 3, 64, 64)
    onnx_path = runtimes.export_onnx(model, folder / "net.onnx", example)
    batches = runtimes.calibration_batches([_smooth(96, 96, p)[0] for p in (0.3, 1.1, 2.0)], 64, 6)
    int8_path = runtimes.quantize_onnx_int8(onnx_path, folder / "net_int8.onnx", batches)
    return {"model": model, "folder": folder, "onnx": onnx_path, "int8": int8_path, "example": example}


def _torch(model, x):
    with torch.no_grad():
        return model(x)


def test_onnxruntime_file_matches_torch_at_two_sizes(files):
    run = runtimes.open_runtime(files["onnx"], "onnxruntime", "fp32", threads=1)
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        assert (run(x) - _torch(files["model"], x)).abs().max() < 1e-4


def test_openvino_ir_and_onnx_match_torch_at_two_sizes(files):
    pytest.importorskip("openvino")
    xml = runtimes.export_openvino(files["model"], files["folder"] / "net.xml", files["example"])
    assert xml.with_suffix(".bin").is_file()
    for path in (xml, files["onnx"]):
        run = runtimes.open_runtime(path, "openvino", "fp32", threads=1)
        for size in SIZES:
            x = torch.randn(2, 3, *size)
            assert (run(x) - _torch(files["model"], x)).abs().max() < 1e-4, path


def test_openvino_ir_keeps_fp32_weights(files):
    ov = pytest.importorskip("openvino")
    xml = runtimes.export_openvino(files["model"], files["folder"] / "weights.xml", files["example"])
    constants = {str(op.get_output_element_type(0)) for op in ov.Core().read_model(str(xml)).get_ops()
                 if op.get_type_name() == "Constant"}
    assert not any("f16" in t for t in constants), constants


def test_in_memory_conversion_matches_torch(files):
    for backend in ("onnxruntime", "openvino"):
        if backend == "openvino":
            pytest.importorskip("openvino")
        run = runtimes.module_runtime(files["model"], backend, "fp32", files["example"], threads=1)
        for size in SIZES:
            x = torch.randn(1, 3, *size)
            assert (run(x) - _torch(files["model"], x)).abs().max() < 1e-4, backend


def test_file_precision_tells_int8_from_float(files):
    assert runtimes.file_precision(files["onnx"]) == "fp32"
    assert runtimes.file_precision(files["int8"]) == "int8"


def test_openvino_file_precision(files, tmp_path):
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    float_xml = runtimes.export_openvino(files["onnx"], tmp_path / "float.xml")
    assert runtimes.file_precision(float_xml) == "fp32"
    # An IR with a FakeQuantize, as NNCF writes them (NNCF itself is exercised by the slow test below).
    x = ops.parameter([1, 3, 8, 8], np.float32)
    low, high = ops.constant(np.float32(-1.0)), ops.constant(np.float32(1.0))
    fq = ops.fake_quantize(x, low, high, low, high, 256)
    ov.save_model(ov.Model([fq], [x]), str(tmp_path / "fq.xml"))
    assert runtimes.file_precision(tmp_path / "fq.xml") == "int8"


def test_int8_quantises_the_inner_compute_layers_only(files):
    import onnx

    graph = onnx.load(str(files["int8"])).graph
    producers = {out: node for node in graph.node for out in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    quantised = [producers.get(conv.input[1]) is not None and producers[conv.input[1]].op_type == "DequantizeLinear"
                 for conv in convs]
    # first and last conv float (they set the output's fine detail), the one between int8
    assert quantised == [False, True, False]
    # normalisation and the residual addition see float inputs
    for node in graph.node:
        if node.op_type in ("InstanceNormalization", "Add"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), node


def test_int8_is_close_to_fp32_on_a_smooth_image(files):
    x = _smooth(96, 80, 0.7)
    fp32 = runtimes.open_runtime(files["onnx"], "onnxruntime", "fp32", threads=1)(x)
    int8 = runtimes.open_runtime(files["int8"], "onnxruntime", "int8", threads=1)(x)
    diff, change = (int8 - fp32).abs(), (fp32 - x).abs()
    print(f"int8 vs fp32: mean {diff.mean():.4f} max {diff.max():.4f}; the net's own change {change.mean():.4f}")
    # Values span [-1, 1]; uint8 activations step by about 0.01. With the end layers, norms and the residual
    # addition in float the error stays near a tenth of a step on average (measured 0.0011, max 0.017);
    # quantising every op measured 0.031 (max 0.14) here. The bound is also a small fraction of what the
    # net changes, so a quantised graph that lost a branch fails it.
    assert 0 < diff.mean() < 0.005 and diff.max() < 0.05, (diff.mean(), diff.max())
    assert diff.mean() < 0.02 * change.mean(), (diff.mean(), change.mean())


def test_quantisation_writes_nothing_in_the_working_folder(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    batches = runtimes.calibration_batches([_smooth(64, 64)[0]], 32, 2)
    runtimes.quantize_onnx_int8(files["onnx"], tmp_path / "out" / "q.onnx", batches)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["q.onnx"]


def test_wrong_combinations_are_one_line_errors(files, tmp_path):
    model, onnx_path, int8_path = files["model"], files["onnx"], files["int8"]
    cases = [
        (lambda: runtimes.torch_runtime(model, "int8"), "--precision int8 is not a PyTorch CPU path"),
        (lambda: runtimes.open_runtime(onnx_path, "onnxruntime", "bf16"), "onnxruntime has no bf16"),
        (lambda: runtimes.open_runtime(onnx_path, "onnxruntime", "int8"), f"{onnx_path}: the file is fp32, not int8"),
        (lambda: runtimes.open_runtime(int8_path, "onnxruntime", "fp32"), f"{int8_path}: the file is int8, not fp32"),
        (lambda: runtimes.open_runtime(tmp_path / "absent.onnx", "onnxruntime"), "absent.onnx: model file not found"),
        (lambda: runtimes.open_runtime(tmp_path / "m.pth", "onnxruntime"), "m.pth: onnxruntime runs .onnx files"),
        (lambda: runtimes.open_runtime(onnx_path, "torch"), "--backend torch does not run exported files"),
        (lambda: runtimes.module_runtime(model, "onnxruntime", "int8", name="best.pth"),
         "best.pth: --precision int8 needs an exported, calibrated model file"),
        (lambda: runtimes.module_runtime(model, "onnxruntime", "bf16"), "onnxruntime has no bf16"),
        (lambda: runtimes.file_precision(tmp_path / "garbage.onnx"), "garbage.onnx: not a readable ONNX model"),
        (lambda: runtimes.calibration_batches([torch.zeros(3, 40, 90)], 64, 1), "90×40 is smaller than the 64-px tile"),
        (lambda: runtimes.calibration_batches([], 64, 1), "at least one image"),
    ]
    (tmp_path / "m.pth").write_bytes(b"x")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf \xff\xfe")
    for call, message in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_openvino_write_errors(files, tmp_path):
    pytest.importorskip("openvino")
    with pytest.raises(ConfigError, match=r"model\.onnx: an OpenVINO model is written as a \.xml file"):
        runtimes.export_openvino(files["onnx"], tmp_path / "model.onnx")
    xml = runtimes.export_openvino(files["onnx"], tmp_path / "lonely.xml")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(ConfigError, match=r"lonely\.xml: not a readable OpenVINO model"):
        runtimes.open_runtime(xml, "openvino")


@pytest.mark.slow
def test_nncf_int8_ir_is_int8_and_close_to_fp32(files, tmp_path):
    pytest.importorskip("nncf")
    batches = runtimes.calibration_batches([_smooth(96, 96, p)[0] for p in (0.3, 1.1, 2.0)], 64, 6)
    xml = runtimes.export_openvino(files["model"], tmp_path / "int8.xml", files["example"], batches)
    assert runtimes.file_precision(xml) == "int8"
    x = _smooth(96, 80, 0.7)
    diff = (runtimes.open_runtime(xml, "openvino", "int8", 1)(x) - _torch(files["model"], x)).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.1, (diff.mean(), diff.max())


@pytest.mark.slow
def test_compiled_torch_runtime_matches_eager(files):
    x = torch.randn(1, 3, 64, 64)
    got = runtimes.torch_runtime(files["model"], "fp32", compile=True)(x)
    assert (got - _torch(files["model"], x)).abs().max() < 1e-4
