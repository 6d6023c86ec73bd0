"""The student loader on the spec's on-disk layout, its Common-Issues errors, and real materials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuropbr.maps import encode_normal
from neuropbr.shards import ShardWriter
from neuropbr.student.config import StudentConfig
from neuropbr.student.data import StudentDataset
from neuropbr.utils.dataset import load_material, train_val_split
from shared.errors import DataError
from shared.images import save_image

DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "pbr"


def make_layout(root: Path, n: int = 2, size: int = 40, dirty: bool = True) -> tuple[Path, Path]:
    from neuropbr.utils.synthetic import make_sample

    inp, out = root / "input", root / "output"
    meta = {}
    for i in range(n):
        views, maps = make_sample(i, size, seed=5)
        for source in ("clean", "dirty") if dirty else ("clean",):
            for v in range(3):
                save_image(inp / source / f"sample_{i:04d}" / f"{v}.png", views[v])
        meta[f"sample_{i:04d}"] = f"material_{i}"
        mat = out / f"material_{i}"
        save_image(mat / "albedo.png", maps["albedo"])
        save_image(mat / "roughness.png", maps["roughness"][0])
        save_image(mat / "metallic.png", maps["metallic"][0])
        save_image(mat / "normal.png", encode_normal(maps["normal"]))
    (inp / "render_metadata.json").write_text(json.dumps(meta))
    return inp, out


def test_student_dataset_reads_pngs_and_shards(tmp_path):
    inp, out = make_layout(tmp_path)
    cfg = StudentConfig()
    cfg.data.image_size, cfg.data.output_size, cfg.data.render_curriculum = 32, 64, 1
    keys = StudentDataset(cfg, inp, out).keys
    assert keys == ["clean/sample_0000", "clean/sample_0001", "dirty/sample_0000", "dirty/sample_0001"]
    writer = ShardWriter(tmp_path / "shards", keys, 8, 48)
    normal = torch.nn.functional.normalize(torch.randn(4, 3, 48, 48), dim=1)
    writer.write(0, {"albedo": torch.rand(4, 3, 48, 48), "roughness": torch.rand(4, 1, 48, 48),
                     "metallic": torch.rand(4, 1, 48, 48), "normal": normal})
    ds = StudentDataset(cfg, inp, out, tmp_path / "shards")
    views, target, teacher = ds[2]
    assert views.shape == (3, 3, 32, 32) and target.shape == (8, 64, 64) and teacher.shape == (8, 64, 64)
    assert torch.allclose(target[5:8].norm(dim=0), torch.ones(64, 64), atol=1e-3)
    assert ds.group_keys == ["material_0", "material_1", "material_0", "material_1"]
    cfg.data.render_curriculum = 0
    assert len(StudentDataset(cfg, inp, out, tmp_path / "shards")) == 2


def test_common_issues_errors(tmp_path):
    inp, out = make_layout(tmp_path, n=1, dirty=False)
    cfg = StudentConfig()
    cfg.data.render_curriculum = 1

    def load(input_dir=inp, curriculum=1):
        cfg.data.render_curriculum = curriculum
        return StudentDataset(cfg, input_dir, out)

    with pytest.raises(DataError, match="not found"):
        load(tmp_path / "nope")
    meta = inp / "render_metadata.json"
    meta.write_text("{}")
    with pytest.raises(DataError, match="sample 'sample_0000' is not in"):
        load()
    meta.unlink()
    with pytest.raises(DataError, match="render_metadata.json not found"):
        load()
    meta.write_text(json.dumps({"sample_0000": "material_0"}))
    with pytest.raises(DataError, match="No samples found"):
        load(curriculum=2)  # no dirty renders
    (out / "material_0" / "normal.png").unlink()
    with pytest.raises(DataError, match="No samples found"):
        load(curriculum=0)


def test_teacher_and_student_split_by_material_alike(tmp_path):
    """Six samples, each a crop of one of three materials: the student's loader and split are the
    teacher's, so both hold out the same materials, and no material is on both sides."""
    from neuropbr.data import build_dataset
    from neuropbr.train_config import TrainConfig

    inp, out = make_layout(tmp_path, n=6, size=40)
    meta = {f"sample_{i:04d}": {"material_name": f"material_{i}", "group": f"rock_{i // 2}"} for i in range(6)}
    (inp / "render_metadata.json").write_text(json.dumps(meta))
    teacher_cfg = TrainConfig()
    teacher_cfg.data.input_dir, teacher_cfg.data.output_dir = str(inp), str(out)
    teacher_cfg.data.image_size, teacher_cfg.data.render_curriculum = 32, 1
    teacher = build_dataset(teacher_cfg.finalize())
    student_cfg = StudentConfig()
    d = student_cfg.data
    d.image_size, d.output_size, d.render_curriculum = 32, 32, 1
    d.mean, d.std = teacher_cfg.transform.mean, teacher_cfg.transform.std
    student = StudentDataset(student_cfg, inp, out)
    assert student.keys == [teacher.sample_key(i) for i in range(len(teacher))]
    assert student.group_keys == teacher.group_keys == [f"rock_{i // 2}" for i in range(6)] * 2
    for seed in range(5):
        split = train_val_split(teacher.group_keys, 0.34, seed)
        assert train_val_split(student.group_keys, 0.34, seed) == split
        train, val = split
        assert len(val) == 4 and not {teacher.group_keys[i] for i in train} & {teacher.group_keys[i] for i in val}
    # The same preprocessing too: identical views and targets for the same sample.
    views, target, _ = student[3]
    assert torch.equal(views, teacher[3][0]) and torch.equal(target, teacher[3][1])


def test_real_materials_load_as_targets():
    if not DATA_DIR.is_dir():
        pytest.skip(f"real PBR sample data not found at {DATA_DIR} (it sits beside the repository in CI)")
    mats = sorted(p for p in DATA_DIR.iterdir() if (p / "albedo.png").is_file())[:2]
    if not mats:
        pytest.skip(f"no material folders in {DATA_DIR}")
    for mat in mats:
        maps = load_material(mat, 64)
        assert maps["albedo"].shape == (3, 64, 64) and maps["roughness"].shape == (1, 64, 64)
        assert torch.allclose(maps["normal"].norm(dim=0), torch.ones(64, 64), atol=1e-3)
        assert float(maps["normal"][2].mean()) > 0.3  # tangent-space normals point mostly out of the surface


@pytest.mark.slow
def test_student_overfits_real_materials():
    """Two real materials, rendered into three views by the package's renderer: the distillation loss
    (ground-truth term, the teacher term needs shards) falls well below its start."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real PBR sample data not found at {DATA_DIR} (it sits beside the repository in CI)")
    from neuropbr.maps import tensor_to_maps
    from neuropbr.student.factory import build_student
    from neuropbr.student.losses import DistillationLoss
    from neuropbr.utils.render import DEFAULT_SETUPS, render_views

    mats = sorted(p for p in DATA_DIR.iterdir() if (p / "albedo.png").is_file())[:2]
    cfg = StudentConfig()
    cfg.model.pretrained, cfg.model.transformer_dim, cfg.model.transformer_num_heads = "none", 64, 4
    cfg.data.image_size, cfg.data.output_size = 32, 64
    mean, std = torch.tensor(cfg.data.mean).view(1, 3, 1, 1), torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    views, targets = [], []
    for mat in mats:
        maps = load_material(mat, 64)
        rendered = render_views(maps, DEFAULT_SETUPS)
        views.append((torch.nn.functional.interpolate(rendered, size=(32, 32), mode="area") - mean) / std)
        targets.append(torch.cat([maps[k] for k in ("albedo", "roughness", "metallic", "normal")]))
    views, target = torch.stack(views), tensor_to_maps(torch.stack(targets))
    torch.manual_seed(0)
    model = build_student(cfg.validate()).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = DistillationLoss(cfg.loss)
    losses = []
    for _ in range(30):
        loss, _ = loss_fn(model(views), None, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-5:]) < 0.5 * losses[0], losses
