"""Serving backends: ONNX Runtime and OpenVINO files give PyTorch's two outputs; int8 is calibrated and
stays close; wrong flag combinations are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from abpn_retouch.data import synthetic_portrait
from abpn_retouch.infer import cli as infer_cli
from abpn_retouch.infer import open_runtime, retouch
from abpn_retouch.model import ABPN, ABPNConfig
from shared.checkpoint import make_training_state, save_checkpoint
from shared.metrics import psnr

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from abpn_retouch.export import export_onnx, export_openvino  # noqa: E402
from abpn_retouch.export import main as export_cli  # noqa: E402

CONFIG = {"pyramid_levels": 1, "base_channels": 8, "refine_channels": 4}


def _tiny_model() -> ABPN:
    torch.manual_seed(0)
    model = ABPN(ABPNConfig(**CONFIG))
    with torch.no_grad():  # off the identity start, so that a wrong output would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny model, its checkpoint, an fp32 ONNX file and a folder of photos for calibration/inference."""
    root = tmp_path_factory.mktemp("serve")
    model = _tiny_model()
    ckpt = save_checkpoint(root / "ckpt.pth", make_training_state(
        kind="abpn_retouch", epoch=1, global_step=1, objects={"model": model}, extra={"model_config": CONFIG}))
    photos = root / "photos"
    photos.mkdir()
    for i, (h, w) in enumerate([(72, 96), (64, 64), (50, 70)]):
        Image.fromarray(synthetic_portrait(i, h, w)[0]).save(photos / f"p{i}.png")
    return {"root": root, "model": model, "ckpt": str(ckpt), "photos": photos,
            "onnx": export_onnx(model, root / "m.onnx")}


def _assert_matches(model, runtime, sizes, tol):
    for size in sizes:
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            expected = model(x)
        got = runtime(x)
        assert [tuple(g.shape) for g in got] == [(2, 3, size, size), (2, 1, size // 2, size // 2)]
        for g, e in zip(got, expected, strict=True):
            assert (g - e).abs().max() < tol, (size, (g - e).abs().max())


def test_onnxruntime_gives_both_outputs_of_pytorch_at_two_tile_sizes(served):
    runtime = open_runtime(served["onnx"], "onnxruntime")
    assert runtime.multiple == 8
    _assert_matches(served["model"], runtime, (32, 64), 1e-5)


def test_openvino_ir_gives_both_outputs_of_pytorch_at_two_tile_sizes(served):
    pytest.importorskip("openvino")
    path = export_openvino(served["model"], served["root"] / "m.xml")
    assert path.with_suffix(".bin").is_file() and not list(served["root"].glob(".*tmp*"))
    runtime = open_runtime(path, "openvino")
    assert runtime.multiple == 8
    # 1e-5: weights halved to fp16 (ov.save_model's default) move outputs by ~1e-4
    _assert_matches(served["model"], runtime, (32, 64), 1e-5)


def test_retouch_through_exported_file_equals_pytorch_tiled(served):
    image = np.array(Image.open(served["photos"] / "p2.png"))
    expected_image, expected_mask = retouch(served["model"], image, tile_size=32, overlap=8, batch_size=3)
    got_image, got_mask = retouch(open_runtime(served["onnx"], "onnxruntime"), image, tile_size=32, overlap=8,
                                  batch_size=3)
    assert got_image.shape == (3, 50, 70) and got_mask.shape == (1, 25, 35)
    assert (got_image - expected_image).abs().max() < 1e-5
    assert (got_mask - expected_mask).abs().max() < 1e-5


def test_int8_export_is_calibrated_and_infer_serves_it(served, capsys):
    root = served["root"]
    assert export_cli(["--checkpoint", served["ckpt"], "--precision", "int8", "--calibration-dir",
                       str(served["photos"]), "--calibration-size", "48", "--calibration-count", "6",
                       "--output", str(root / "m8.onnx")]) == 0
    assert "int8 vs PyTorch fp32" in capsys.readouterr().out
    from shared.runtimes import file_precision

    assert file_precision(root / "m8.onnx") == "int8"
    out = root / "out8"
    infer_cli(["--backend", "onnxruntime", "--precision", "int8", "--model", str(root / "m8.onnx"),
               "--input", str(served["photos"] / "p0.png"), "--output", str(out / "p0.png"), "--save-mask",
               "--tile-size", "32", "--overlap", "8"])
    got = np.array(Image.open(out / "p0.png"))
    assert got.shape == (72, 96, 3) and Image.open(out / "p0_mask.png").size == (96, 72)
    reference, _ = retouch(served["model"], np.array(Image.open(served["photos"] / "p0.png")), 32, 8)
    quality = psnr(torch.from_numpy(got).permute(2, 0, 1)[None].float() / 255, reference[None])
    # close to fp32, yet really quantised: the float graph reaches the 100 dB cap of shared.metrics.psnr
    assert 25 < quality.item() < 95, quality


@pytest.mark.slow
def test_openvino_int8_through_nncf(served, capsys):
    pytest.importorskip("nncf")
    root = served["root"]
    assert export_cli(["--checkpoint", served["ckpt"], "--format", "openvino", "--precision", "int8",
                       "--calibration-dir", str(served["photos"]), "--calibration-size", "48",
                       "--calibration-count", "6", "--output", str(root / "m8.xml")]) == 0
    assert "openvino int8" in capsys.readouterr().out
    image = np.array(Image.open(served["photos"] / "p0.png"))
    expected, _ = retouch(served["model"], image, 32, 8)
    got, mask = retouch(open_runtime(root / "m8.xml", "openvino", "int8"), image, 32, 8)
    assert mask.shape == (1, 36, 48)
    assert 25 < psnr(got[None], expected[None]).item() < 95
    # OpenVINO also reads the fp32 ONNX file directly, tile multiple included
    runtime = open_runtime(served["onnx"], "openvino")
    assert runtime.multiple == 8
    _assert_matches(served["model"], runtime, (32,), 1e-5)


def _error(entry, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        entry(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--backend", "torch", "--precision", "int8", "--checkpoint", "{ckpt}"], "not a PyTorch path"),
    (["--backend", "torch", "--model", "{onnx}"], "--backend torch reads --checkpoint"),
    (["--backend", "onnxruntime"], "needs --model FILE"),
    (["--backend", "onnxruntime", "--model", "{onnx}", "--checkpoint", "{ckpt}"], "not --checkpoint"),
    (["--backend", "onnxruntime", "--model", "{onnx}", "--precision", "bf16"], "no bf16 CPU path"),
    (["--backend", "onnxruntime", "--model", "{onnx}", "--precision", "int8"], "the file is fp32, not int8"),
    (["--backend", "onnxruntime", "--model", "{onnx}", "--device", "cuda"], "runs on the CPU"),
    (["--backend", "onnxruntime", "--model", "{onnx}", "--tile-size", "36"], "multiple of 8"),
    (["--backend", "onnxruntime", "--model", "{root}/missing.onnx"], "model file not found"),
    (["--backend", "onnxruntime", "--model", "{ckpt}"], "runs .onnx files"),
])
def test_infer_refuses_wrong_combinations(served, capsys, flags, expected):
    flags = [f.format(**{k: served[k] for k in ("ckpt", "onnx", "root")}) for f in flags]
    err = _error(infer_cli, [*flags, "--input", str(served["photos"]), "--output", str(served["root"] / "o")],
                 capsys)
    assert expected in err and not (served["root"] / "o").exists()


def test_infer_refuses_a_foreign_or_broken_onnx_file(served, capsys):
    from shared.runtimes import export_onnx as plain_export

    class TwoOutputs(torch.nn.Module):
        def forward(self, x):
            return x, x[:, :1, ::2, ::2]

    path = plain_export(TwoOutputs(), served["root"] / "plain.onnx", torch.rand(1, 3, 8, 8))
    err = _error(infer_cli, ["--backend", "onnxruntime", "--model", str(path), "--input", str(served["photos"]),
                             "--output", str(served["root"] / "o")], capsys)
    assert "not an ABPN export" in err
    broken = served["root"] / "broken.onnx"
    broken.write_bytes(served["onnx"].read_bytes()[:1000])  # a truncated download
    err = _error(infer_cli, ["--backend", "onnxruntime", "--model", str(broken), "--input", str(served["photos"]),
                             "--output", str(served["root"] / "o")], capsys)
    assert "broken.onnx: not a readable ONNX model" in err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--precision", "int8", "--output", "{root}/x.onnx"], "needs --calibration-dir"),
    (["--calibration-dir", "{photos}", "--output", "{root}/x.onnx"], "only used with --precision int8"),
    (["--format", "openvino", "--output", "{root}/x.onnx"], "writes a .xml file"),
    (["--precision", "int8", "--calibration-dir", "{photos}", "--calibration-size", "128", "--output",
      "{root}/x.onnx"], "no image is at least 128×128"),
    (["--precision", "int8", "--calibration-dir", "{photos}", "--calibration-size", "36", "--output",
      "{root}/x.onnx"], "multiple of 8"),
    (["--precision", "int8", "--calibration-dir", "{root}/nowhere", "--output", "{root}/x.onnx"], "not found"),
])
def test_export_refuses_wrong_combinations(served, capsys, flags, expected):
    flags = [f.format(root=served["root"], photos=served["photos"]) for f in flags]
    err = _error(export_cli, ["--checkpoint", served["ckpt"], *flags], capsys)
    assert expected in err and not (served["root"] / "x.onnx").exists()
