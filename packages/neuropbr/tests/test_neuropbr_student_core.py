"""Students, distillation loss, shards and the student loader (tiny sizes, CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from neuropbr.shards import ShardIndex, ShardWriter
from neuropbr.student.config import StudentConfig, config_from_dict, load_student_config
from neuropbr.student.convattn import PrecomputedLargeKernel
from neuropbr.student.data import SyntheticStudentDataset
from neuropbr.student.factory import build_student, detect_arch, load_student
from neuropbr.student.losses import DistillationLoss, normal_angle_loss
from shared.errors import ConfigError, DataError


def tiny_student_config(arch: str = "mobilenetv3_vit", size: int = 32, sr: int = 2) -> StudentConfig:
    cfg = StudentConfig()
    cfg.model.arch = arch
    cfg.model.pretrained = "none"
    cfg.model.transformer_dim = 64
    cfg.model.transformer_num_heads = 4
    cfg.model.convattn_dim = 48
    cfg.model.plk_channels = 16
    cfg.model.sr_scale = sr
    cfg.data.image_size = size
    cfg.data.output_size = size * sr
    return cfg.validate()


def _maps(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=g), dim=1)
    return {"albedo": torch.rand(n, 3, size, size, generator=g), "roughness": torch.rand(n, 1, size, size, generator=g),
            "metallic": torch.rand(n, 1, size, size, generator=g), "normal": normal}


# --- configs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "arch", "size", "out", "epochs"), [
    ("mobilenetv3_512", "mobilenetv3_vit", 512, 1024, 100),
    ("convattn_student", "mobilenetv3_convattn", 1024, 1024, 60),
    ("mobilenetv3_2048", "mobilenetv3_vit", 2048, 2048, 100),
])
def test_config_files(name, arch, size, out, epochs):
    cfg = load_student_config(name)
    assert (cfg.model.arch, cfg.data.image_size, cfg.data.output_size, cfg.training.epochs) == (arch, size, out, epochs)
    if arch == "mobilenetv3_vit":
        assert (cfg.model.transformer_dim, cfg.model.transformer_depth) == (256, 2)
    else:
        assert (cfg.model.plk_kernel_size, cfg.model.convattn_blocks) == (17, 3)
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_student_config("no_such_config")
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    return 3\n")
    with pytest.raises(ConfigError, match="StudentConfig"):
        load_student_config(str(bad))
    cfg = StudentConfig()
    cfg.data.output_size = 999
    with pytest.raises(ConfigError, match="output_size"):
        cfg.validate()
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict({"model": {"nope": 1}})
    with pytest.raises(ConfigError, match="unknown key 'training.batch_sise'"):
        cfg.training.batch_sise = 4
    typo = tmp_path / "typo.py"
    typo.write_text("from neuropbr.student.config import StudentConfig\n\n"
                    "def get_config():\n    cfg = StudentConfig()\n    cfg.data.imge_size = 256\n    return cfg\n")
    with pytest.raises(ConfigError, match=r"typo.py: get_config\(\) failed: .*unknown key 'data.imge_size'"):
        load_student_config(str(typo))


# --- models ----------------------------------------------------------------------------------------

def test_mobilenetv3_512_student_outputs_1024():
    """The real iPhone config: 512² views in, 1024² maps out through the ×2 SR head."""
    cfg = load_student_config("mobilenetv3_512")
    cfg.model.pretrained = "none"
    model = build_student(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 512, 512))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "albedo": (1, 3, 1024, 1024), "roughness": (1, 1, 1024, 1024),
        "metallic": (1, 1, 1024, 1024), "normal": (1, 3, 1024, 1024)}
    for name in ("albedo", "roughness", "metallic"):
        assert float(out[name].min()) >= 0.0 and float(out[name].max()) <= 1.0
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(1, 1024, 1024), atol=1e-3)


@pytest.mark.parametrize(("arch", "sr"), [("mobilenetv3_vit", 2), ("mobilenetv3_convattn", 1)])
def test_student_shapes_and_sr_bypass(arch, sr):
    model = build_student(tiny_student_config(arch, 64, sr)).eval()
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        bypass = model(x, use_sr=False)
    assert out["albedo"].shape == (2, 3, 64 * sr, 64 * sr)
    assert bypass["normal"].shape == (2, 3, 64, 64)
    assert detect_arch(model.state_dict()) == arch


def test_precomputed_large_kernel_merges_and_refreshes():
    plk = PrecomputedLargeKernel(4, 17)
    merged = plk.merged()
    assert merged.shape == (4, 4, 17, 17)
    expected = plk.large.detach().clone()
    expected[..., 5:12, 5:12] += plk.small[0].detach()
    expected[..., 7:10, 7:10] += plk.small[1].detach()
    assert torch.allclose(merged, expected)
    with torch.no_grad():
        cached = plk.kernel()
        assert plk.kernel() is cached  # pre-computed once
        plk.large.add_(1.0)
        assert torch.allclose(plk.kernel(), expected + 1.0)  # refreshed after a weight update
    assert plk.kernel().requires_grad  # training path stays differentiable


def test_convattn_memory_is_linear_no_attention_matrix():
    """ConvAttn has no token-by-token matrix: the same weights run at 2× the side with no N² tensor."""
    model = build_student(tiny_student_config("mobilenetv3_convattn", 32, 1)).eval()
    sizes = []

    def hook(_, __, output):
        sizes.append(output.numel())

    for block in model.fusion.blocks:
        block.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, 3, 64, 64))
        small = sum(sizes)
        sizes.clear()
        model(torch.randn(1, 3, 3, 128, 128))
    assert sum(sizes) == 4 * small  # activations scale with pixels (O(N)), not pixels² (O(N²))


# --- loss ------------------------------------------------------------------------------------------

def test_distillation_loss_hand_computed():
    ones = torch.ones(1, 1, 2, 2)
    z = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    pred = {"albedo": torch.full((1, 3, 2, 2), 0.5), "roughness": ones * 0.2, "metallic": ones * 0.0, "normal": z}
    teacher = {"albedo": torch.full((1, 3, 2, 2), 0.7), "roughness": ones * 0.2, "metallic": ones * 1.0, "normal": z}
    gt = {"albedo": torch.full((1, 3, 2, 2), 0.5), "roughness": ones * 0.6, "metallic": ones * 0.0, "normal": x}
    loss_fn = DistillationLoss()  # w_teacher 0.7, w_gt 0.3, per-map 1, angle 0.5
    total, logs = loss_fn(pred, teacher, gt)
    teacher_term = 0.2 + 0.0 + 1.0 + 0.0 + 0.5 * 0.0
    gt_term = 0.0 + 0.4 + 0.0 + (2.0 / 3.0) + 0.5 * 1.0  # normal L1: |0-1|+0+|1-0| over 3 channels
    assert math.isclose(float(total), 0.7 * teacher_term + 0.3 * gt_term, rel_tol=1e-5)
    assert math.isclose(logs["teacher/loss"], teacher_term, rel_tol=1e-5)
    assert math.isclose(logs["gt/normal_angle"], 1.0, rel_tol=1e-5)
    only_gt, _ = loss_fn(pred, None, gt)
    assert math.isclose(float(only_gt), 0.3 * gt_term, rel_tol=1e-5)
    assert math.isclose(float(normal_angle_loss(z, -z)), 2.0, rel_tol=1e-5)


# --- shards ----------------------------------------------------------------------------------------

def test_shard_round_trip_values_dtype_index(tmp_path):
    keys = [f"clean/sample_{i:04d}" for i in range(5)]
    maps = _maps(5, 8)
    writer = ShardWriter(tmp_path, keys, shard_size=2, output_size=8, source={"synthetic": True})
    assert writer.plan == [keys[0:2], keys[2:4], keys[4:5]]
    for shard, group in enumerate(writer.plan):
        idx = [keys.index(k) for k in group]
        writer.write(shard, {k: v[idx] for k, v in maps.items()})
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["complete"] and index["dtype"] == "float16" and index["num_samples"] == 5
    assert [s["keys"] for s in index["shards"]] == writer.plan
    raw = torch.load(tmp_path / "shard_00001.pt", weights_only=True)
    assert raw["keys"] == keys[2:4] and all(raw[k].dtype == torch.float16 for k in maps)
    reader = ShardIndex(tmp_path)
    assert len(reader) == 5 and reader.output_size == 8
    for i, key in enumerate(keys):
        got = reader[key]
        for name, value in maps.items():
            assert got[name].dtype == torch.float32
            assert torch.allclose(got[name], value[i].half().float())
            assert (got[name] - value[i]).abs().max() < 1e-3
    with pytest.raises(DataError, match="no teacher prediction"):
        reader["dirty/sample_0000"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_shards_resume_and_refuse_mixing(tmp_path):
    keys = [f"clean/sample_{i:04d}" for i in range(4)]
    maps = _maps(2, 4)
    writer = ShardWriter(tmp_path, keys, 2, 4)
    writer.write(0, maps)  # the run "dies" after shard 0
    assert not ShardIndex(tmp_path).complete and len(ShardIndex(tmp_path)) == 2
    stamp = (tmp_path / "shard_00000.pt").stat().st_mtime_ns
    again = ShardWriter(tmp_path, keys, 2, 4)
    assert [again.is_complete(i) for i in range(2)] == [True, False]
    again.write(1, maps)
    assert ShardIndex(tmp_path).complete and (tmp_path / "shard_00000.pt").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="output_size"):
        ShardWriter(tmp_path, keys, 2, 8)
    with pytest.raises(DataError, match="another sample list"):
        ShardWriter(tmp_path, keys[:3], 2, 4)
    (tmp_path / "shard_00001.pt").write_bytes(b"torn")  # size no longer matches the index
    assert not ShardWriter(tmp_path, keys, 2, 4).is_complete(1)


def test_shard_index_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ShardIndex(tmp_path / "missing")
    with pytest.raises(DataError, match="index not found"):
        ShardIndex(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        ShardIndex(tmp_path)


# --- loader ----------------------------------------------------------------------------------------

def test_synthetic_loader_matches_shards_and_resizes(tmp_path):
    cfg = tiny_student_config("mobilenetv3_vit", 32, 2)
    ds = SyntheticStudentDataset(cfg, num_samples=2, seed=3)
    writer = ShardWriter(tmp_path, ds.keys, 8, 32)  # teacher shards at 32², the student outputs 64²
    maps = _maps(2, 32)
    writer.write(0, maps)
    with_shards = SyntheticStudentDataset(cfg, num_samples=2, seed=3, shards_dir=tmp_path)
    views, target, teacher = with_shards[1]
    assert views.shape == (3, 3, 32, 32) and target.shape == (8, 64, 64) and teacher.shape == (8, 64, 64)
    again = SyntheticStudentDataset(cfg, num_samples=2, seed=3)[1]
    assert torch.equal(again[0], views) and torch.equal(again[1], target)  # deterministic by (seed, index)
    assert ds[0][2].numel() == 0
    cfg.data.render_curriculum = 2  # dirty samples are not in these shards
    with pytest.raises(DataError, match="no teacher prediction"):
        SyntheticStudentDataset(cfg, num_samples=2, seed=3, shards_dir=tmp_path)


def test_load_student_detects_architecture(tmp_path):
    from neuropbr.student.train import export_student

    cfg = tiny_student_config("mobilenetv3_convattn", 32, 1)
    model = build_student(cfg)
    path = export_student(tmp_path / "best_student.pth", model, cfg)
    loaded, loaded_cfg = load_student(path)
    assert loaded_cfg.model.arch == "mobilenetv3_convattn" and type(loaded) is type(model)
    torch.save({"model_state_dict": model.state_dict(), "config": {}}, tmp_path / "bare.pth")
    with pytest.raises(Exception, match="do not fit|another"):
        load_student(tmp_path / "bare.pth")  # default config differs in widths: a clear error, not a crash
