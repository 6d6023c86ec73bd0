"""Core ML conversion (coremltools on Linux) and ONNX export with onnxruntime parity."""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest
import torch

from neuropbr.student.config import StudentConfig
from neuropbr.student.factory import build_student
from neuropbr.student.train import export_student


def _tiny_checkpoint(path: Path, arch: str, sr: int) -> Path:
    cfg = StudentConfig()
    cfg.model.arch, cfg.model.pretrained, cfg.model.sr_scale = arch, "none", sr
    cfg.model.transformer_dim, cfg.model.transformer_num_heads = 64, 4
    cfg.model.convattn_dim, cfg.model.plk_channels = 48, 16
    cfg.data.image_size, cfg.data.output_size = 32, 32 * sr
    torch.manual_seed(0)
    return export_student(path, build_student(cfg.validate()), cfg)


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("vit") / "best_student.pth", "mobilenetv3_vit", 2)


def _ops(mlmodel) -> collections.Counter:
    spec = mlmodel.get_spec()
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    return collections.Counter(op.type for op in block.operations)


def test_coreml_conversion_keeps_sr_head(vit_ckpt, tmp_path):
    ct = pytest.importorskip("coremltools")
    from neuropbr.coreml.converter import convert

    out = tmp_path / "pbr.mlpackage"
    summary = convert(vit_ckpt, out, fp16=True)  # default conversion: config resolution, SR head kept
    assert summary["sr_head"] and summary["output_size"] == 64 and out.is_dir()
    model = ct.models.MLModel(str(out), skip_model_load=True)
    spec = model.get_spec()
    assert spec.specificationVersion >= 8  # iOS 17 deployment target
    assert [i.name for i in spec.description.input] == ["view_0", "view_1", "view_2"]
    assert all(i.type.WhichOneof("Type") == "imageType" for i in spec.description.input)
    shapes = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    assert shapes == {"albedo": [1, 3, 64, 64], "roughness": [1, 1, 64, 64],
                      "metallic": [1, 1, 64, 64], "normal": [1, 3, 64, 64]}
    ops = _ops(model)
    assert ops["pixel_shuffle"] == 1  # the trained SR head is in the program
    assert ops["sub"] >= 1 and ops["real_div"] + ops["mul"] >= 1  # ImageNet normalisation baked in
    assert model.user_defined_metadata["neuropbr.architecture"] == "mobilenetv3_vit"
    assert model.user_defined_metadata["neuropbr.precision"] == "fp16"


@pytest.mark.slow
def test_coreml_palettized_and_test_resolution(tmp_path):
    ct = pytest.importorskip("coremltools")
    from neuropbr.coreml.converter import convert

    ckpt = _tiny_checkpoint(tmp_path / "convattn.pth", "mobilenetv3_convattn", 1)
    summary = convert(ckpt, tmp_path / "pal.mlpackage", palettization=True, test_resolution=64)
    assert summary["palettized"] and summary["output_size"] == 64
    ops = _ops(ct.models.MLModel(str(tmp_path / "pal.mlpackage"), skip_model_load=True))
    assert ops["constexpr_lut_to_dense"] > 0  # 8-bit palettized weights
    vit = _tiny_checkpoint(tmp_path / "vit.pth", "mobilenetv3_vit", 2)
    assert convert(vit, tmp_path / "nosr.mlpackage", test_resolution=64)["output_size"] == 64  # SR bypassed
    assert convert(vit, tmp_path / "sr.mlpackage", test_resolution=64, use_sr=True)["output_size"] == 128


@pytest.mark.parametrize("arch", ["mobilenetv3_vit", pytest.param("mobilenetv3_convattn", marks=pytest.mark.slow)])
def test_onnx_parity(arch, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from neuropbr.export_onnx import export, parity

    ckpt = _tiny_checkpoint(tmp_path / "s.pth", arch, 2 if arch == "mobilenetv3_vit" else 1)
    summary = export(ckpt, tmp_path / "s.onnx")
    assert summary["output_size"] == (64 if arch == "mobilenetv3_vit" else 32)
    assert parity(ckpt, tmp_path / "s.onnx") < 1e-4


def test_converter_without_coremltools_says_how(monkeypatch):
    if importlib.util.find_spec("coremltools") is not None:
        monkeypatch.setitem(__import__("sys").modules, "coremltools", None)
    from neuropbr.coreml.converter import import_coremltools
    from shared.errors import UserError

    with pytest.raises(UserError, match="extra coreml"):
        import_coremltools()


def test_coreml_inference_resizes_views_like_training(tmp_path):
    """The Core ML pipeline feeds the model views resized as the student was trained on them (torch
    bilinear with antialiasing, then 8 bits), not with another filter."""
    import numpy as np

    from neuropbr.coreml.run_inference import load_views
    from neuropbr.utils.dataset import load_views as training_views
    from shared.images import save_image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):  # fine detail: every filter gives a different downscale
        paths.append(save_image(tmp_path / f"{i}.png", rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)))
    fed = np.stack([np.asarray(v, dtype=np.float32) / 255.0 for v in load_views(paths, 32)])
    trained = training_views(paths, 32).permute(0, 2, 3, 1).numpy()
    assert fed.shape == (3, 32, 32, 3)
    assert np.abs(fed - trained).max() <= 0.5 / 255 + 1e-6
