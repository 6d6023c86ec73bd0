"""Archives, labels CSV, trimap validation, transforms and the synthetic dataset."""

from __future__ import annotations

import csv
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alphagan_matting.dataset import (
    MattingDataset,
    SyntheticMattingDataset,
    load_labels,
    prepare_labels,
    unpack_archives,
)
from alphagan_matting.transforms.models.matting_transforms import generate_trimap
from alphagan_matting.transforms.trans_pipeline import build_transforms
from alphagan_matting.utils import TrimapNotes, read_trimap
from shared.errors import DataError

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "matting"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
needs_data = pytest.mark.skipif(not (DATA / "original").is_dir(), reason=f"real matting samples not found at {DATA}")


# ------------------------------------------------------------------------------------------ archives
def _zip(path: Path, entries: list[tuple[str, bytes]], links: list[tuple[str, str]] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            zf.writestr(info, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_unpack_archives_extracts(tmp_path):
    archive = _zip(tmp_path / "ok.zip", [("AIM-500/mask/a.png", b"x"), ("AIM-500/trimap/a.png", b"y")],
                   links=[("AIM-500/link.png", "mask/a.png")])
    dst = tmp_path / "out"
    written = unpack_archives(archive, dst)
    assert (dst / "AIM-500/mask/a.png").read_bytes() == b"x"
    assert (dst / "AIM-500/link.png").is_symlink() and (dst / "AIM-500/link.png").read_bytes() == b"x"
    assert len(written) == 3


@pytest.mark.parametrize(
    ("entries", "links", "reason"),
    [
        ([("/etc/evil.txt", b"x")], [], "absolute path"),
        ([("ok.txt", b"x"), ("../evil.txt", b"x")], [], "'..'"),
        ([("a/../../evil.txt", b"x")], [], "'..'"),
        ([("C:/evil.txt", b"x")], [], "absolute path"),
        ([("ok.txt", b"x")], [("escape", "../../outside")], "points outside"),
        ([], [("abs", "/etc/passwd")], "absolute target"),
    ],
)
def test_unpack_archives_refuses_escaping_entries(tmp_path, entries, links, reason):
    archive = _zip(tmp_path / "evil.zip", entries, links)
    dst = tmp_path / "out"
    with pytest.raises(DataError, match=reason):
        unpack_archives(archive, dst)
    assert not list(dst.rglob("*")), "nothing may be written from a refused archive"
    assert not (tmp_path / "evil.txt").exists()


def test_unpack_archives_never_writes_through_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "evil").symlink_to(outside)  # a link already in the destination
    with pytest.raises(DataError, match="'evil/x.txt': it would land outside"):
        unpack_archives(_zip(tmp_path / "a.zip", [("evil/x.txt", b"x")]), dst)
    (outside / "victim.txt").write_text("keep")
    (dst / "victim.txt").symlink_to(outside / "victim.txt")
    unpack_archives(_zip(tmp_path / "b.zip", [("victim.txt", b"new")]), dst)
    assert (outside / "victim.txt").read_text() == "keep"  # the link was replaced, not followed
    assert (dst / "victim.txt").read_bytes() == b"new"


def test_unpack_archives_refuses_link_chains_that_escape(tmp_path):
    # 'b' -> '.' and 'a' -> 'b/..' look harmless one by one; together 'a' is dst's parent.
    archive = _zip(tmp_path / "evil.zip", [], links=[("b", "."), ("a", "b/..")])
    with pytest.raises(DataError, match="points outside"):
        unpack_archives(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "a").is_symlink()


def test_unpack_archives_not_a_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip: not a zip archive"):
        unpack_archives(bad, tmp_path / "out")


# -------------------------------------------------------------------------------------------- labels
def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_fg(root: Path, stems, size=(40, 48)) -> None:
    rng = np.random.default_rng(0)
    for stem in stems:
        _save(root / "original" / f"{stem}.png", (rng.random((*size, 3)) * 255).astype(np.uint8))
        alpha = np.zeros(size, np.uint8)
        alpha[10:30, 10:30] = 255
        alpha[9, 10:30] = 120
        _save(root / "mask" / f"{stem}.png", alpha)
        trimap = np.zeros(size, np.uint8)
        trimap[8:32, 8:32] = 128
        trimap[12:28, 12:28] = 255
        _save(root / "trimap" / f"{stem}.png", trimap)
    _save(root.parent / "BG" / "nested" / "deeper" / "b.jpg", (rng.random((50, 60, 3)) * 255).astype(np.uint8))


def test_prepare_labels_and_load(tmp_path):
    _make_fg(tmp_path / "AIM", ["a", "b", "c"])
    out = prepare_labels(tmp_path / "AIM", tmp_path / "BG", tmp_path / "dataset_labels.csv")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["original", "trimap", "mask", "background", "split"]
    assert [Path(r["original"]).stem for r in rows] == ["a", "b", "c"]
    assert all(Path(r["background"]).name == "b.jpg" for r in rows)  # found recursively
    assert sorted(r["split"] for r in rows) == ["test", "train", "train"]
    assert len(load_labels(out)) == 3


def test_prepare_labels_missing_stem(tmp_path):
    _make_fg(tmp_path / "AIM", ["a", "b"])
    (tmp_path / "AIM" / "trimap" / "b.png").unlink()
    with pytest.raises(DataError, match=r"no file with stem 'b' in .*trimap"):
        prepare_labels(tmp_path / "AIM", tmp_path / "BG", tmp_path / "labels.csv")


def test_prepare_labels_missing_folder_and_no_backgrounds(tmp_path):
    _make_fg(tmp_path / "AIM", ["a"])
    with pytest.raises(DataError, match="background folder not found"):
        prepare_labels(tmp_path / "AIM", tmp_path / "nope", tmp_path / "labels.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no background images found"):
        prepare_labels(tmp_path / "AIM", tmp_path / "empty", tmp_path / "labels.csv")
    with pytest.raises(DataError, match="mask: folder not found"):
        prepare_labels(tmp_path / "BG", tmp_path / "BG", tmp_path / "labels.csv")


def test_bad_trimap_values(tmp_path, capsys):
    _make_fg(tmp_path / "AIM", ["a", "b"])
    trimap = np.zeros((40, 48), np.uint8)
    trimap[5:9, 5:9] = 100  # unknown (86..169)
    trimap[20:30, 20:30] = 85  # background (<= 85)
    trimap[30:35, 30:35] = 170  # foreground (>= 170)
    _save(tmp_path / "AIM" / "trimap" / "a.png", trimap)
    _save(tmp_path / "AIM" / "trimap" / "b.png", trimap)
    notes = TrimapNotes()
    read = read_trimap(tmp_path / "AIM" / "trimap" / "a.png", notes)
    assert read[6, 6] == 128 and read[25, 25] == 0 and read[32, 32] == 255 and read[0, 0] == 0
    assert set(np.unique(read)) == {0, 128, 255} and notes.count == 1
    prepare_labels(tmp_path / "AIM", tmp_path / "BG", tmp_path / "labels.csv")
    err = [line for line in capsys.readouterr().err.splitlines() if "trimap" in line]
    assert len(err) == 1 and "2 trimap(s)" in err[0] and str(tmp_path / "AIM" / "trimap" / "a.png") in err[0]

    trimap[5:9, 5:9] = 60  # now only background and foreground: nothing to predict
    _save(tmp_path / "AIM" / "trimap" / "b.png", trimap)
    with pytest.raises(DataError, match=r"b\.png: trimap has no unknown region"):
        prepare_labels(tmp_path / "AIM", tmp_path / "BG", tmp_path / "labels.csv")
    _save(tmp_path / "AIM" / "trimap" / "b.png", np.full((40, 47), 128, np.uint8))
    with pytest.raises(DataError, match=r"b\.png: trimap is 47x40 but .*mask.b\.png is 48x40"):
        prepare_labels(tmp_path / "AIM", tmp_path / "BG", tmp_path / "labels.csv")


def test_load_labels_errors(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("original,trimap\nx,y\n")
    with pytest.raises(DataError, match="missing column"):
        load_labels(path)
    path.write_text("original,trimap,mask,background,split\nx.png,y.png,z.png,w.png,train\n")
    with pytest.raises(DataError, match="line 2: original file 'x.png' not found"):
        load_labels(path)


@needs_data
def test_real_samples_through_prepare_labels(tmp_path):
    out = prepare_labels(DATA, DATA / "bg", tmp_path / "dataset_labels.csv")
    rows = load_labels(out)
    assert len(rows) == 10 and {r["split"] for r in rows} == {"train", "test"}
    train_tf, test_tf = build_transforms(64, 64, MEAN, STD)
    train = MattingDataset([r for r in rows if r["split"] == "train"], train_tf, True, seed=1)
    test = MattingDataset([r for r in rows if r["split"] == "test"], test_tf, False, seed=1)
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64) and sample["alpha"].shape == (1, 64, 64)
    assert set(np.unique(sample["trimap"].numpy())) <= {0.0, 0.5, 1.0}
    assert (sample["trimap"] == 0.5).any()  # cropped around the unknown band
    again = train[0]
    assert all((sample[k] == again[k]).all() for k in sample)  # same seed, same epoch, same crop
    train.set_epoch(1)
    assert not (train[0]["image"] == sample["image"]).all()
    t = test[0]
    assert t["trimap"].shape == (1, 64, 64)


# ---------------------------------------------------------------------------------------- transforms
def test_generate_trimap_bands():
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    alpha[10:30, 9] = 0.5
    trimap = generate_trimap(alpha, np.random.default_rng(0), 2, 2)
    assert set(np.unique(trimap)) == {0, 128, 255}
    assert (trimap[alpha == 0.5] == 128).all()  # soft pixels are always unknown
    assert (trimap[14:26, 14:26] == 255).all() and trimap[10, 10] == 128  # eroded by 2
    assert trimap[0, 0] == 0 and trimap[10, 7] == 128 and trimap[10, 6] == 0  # dilated by 2


def test_synthetic_dataset_has_soft_edges():
    train_tf, test_tf = build_transforms(64, 64, MEAN, STD)
    ds = SyntheticMattingDataset(3, 80, train_tf, True, seed=0)
    sample = ds[1]
    alpha = sample["alpha"].numpy()
    assert sample["image"].shape == (3, 64, 64)
    soft = (alpha > 0.05) & (alpha < 0.95)
    assert soft.sum() > 20, "synthetic mattes need fractional (hairy/soft) alpha"
    comp = sample["alpha"] * sample["fg"] + (1 - sample["alpha"]) * sample["bg"]
    assert np.allclose(comp.numpy(), sample["composite"].numpy(), atol=1e-5)
    test = SyntheticMattingDataset(2, 80, test_tf, False, seed=0)[0]
    assert set(np.unique(test["trimap"].numpy())) == {0.0, 0.5, 1.0}
