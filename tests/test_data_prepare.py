"""Each package's prepare command (docs/data.md) on a tiny download of the real structure, read back by
the package's own data loader.

The archives are built here with the folder and file names the real downloads use (GOPRO_Large.zip,
FiveK's expert TIFFs, FFHQ/FFHQR's numbered chunk folders, AIM-500 + BG-20k zips, CelebA-HQ + a mask
set, ambientCG material zips), with small images, and the commands run in-process.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _png(seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _error_line(capsys, run) -> str:
    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------------------- deblur_unet
def _gopro_zip(path: Path, drop: str | None = None) -> tuple[Path, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    seed = 0
    for split, sequence, frames in (("train", "GOPR0372_07_00", ("000047", "000048")),
                                    ("train", "GOPR0374_11_00", ("000047",)),  # the same frame name again
                                    ("test", "GOPR0384_11_00", ("000001",))):
        for frame in frames:
            for kind in ("blur", "blur_gamma", "sharp"):
                seed += 1
                files[f"GOPRO_Large/{split}/{sequence}/{kind}/{frame}.png"] = _png(seed)
    files.pop(drop, None)
    return _zip(path, files), files


def test_deblur_prepare_gopro_zip_gives_unique_flat_pairs_the_trainer_splits(tmp_path):
    from deblur_unet.data import split_pairs
    from deblur_unet.prepare import main

    archive, files = _gopro_zip(tmp_path / "GOPRO_Large.zip")
    assert main(["gopro", str(archive), "--out", str(tmp_path / "gopro")]) == 0

    train, val = split_pairs(tmp_path / "gopro", val_fraction=0.1, seed=0)
    assert sorted(b.name for b, _ in train) == ["GOPR0372_07_00_000047.png", "GOPR0372_07_00_000048.png",
                                                "GOPR0374_11_00_000047.png"]
    assert [b.name for b, _ in val] == ["GOPR0384_11_00_000001.png"]
    blur, sharp = next((b, s) for b, s in train if b.name == "GOPR0374_11_00_000047.png")
    assert blur.read_bytes() == files["GOPRO_Large/train/GOPR0374_11_00/blur/000047.png"]
    assert sharp.read_bytes() == files["GOPRO_Large/train/GOPR0374_11_00/sharp/000047.png"]

    assert main(["gopro", str(archive), "--out", str(tmp_path / "gamma"), "--blur-folder", "blur_gamma"]) == 0
    assert ((tmp_path / "gamma" / "test" / "blur" / "GOPR0384_11_00_000001.png").read_bytes()
            == files["GOPRO_Large/test/GOPR0384_11_00/blur_gamma/000001.png"])


def test_deblur_prepare_refuses_a_frame_without_its_sharp_twin_and_writes_nothing(tmp_path, capsys):
    from deblur_unet.prepare import main

    archive, _ = _gopro_zip(tmp_path / "GOPRO_Large.zip", drop="GOPRO_Large/train/GOPR0372_07_00/sharp/000048.png")
    line = _error_line(capsys, lambda: main(["gopro", str(archive), "--out", str(tmp_path / "out")]))
    assert str(archive) in line and "train/GOPR0372_07_00/000048.png has no sharp/ twin" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ abpn_retouch
def test_abpn_prepare_fivek_pairs_by_id_and_the_trainer_reads_the_pairs(tmp_path, capsys):
    from abpn_retouch.data import file_sources
    from abpn_retouch.prepare import main

    names = {"a0001": "a0001-jmac_DSC1459", "a0002": "a0002-dgw_005", "a0003": "a0003-NKIM_MG_8178"}
    inputs = _tar(tmp_path / "input.tar", {f"fivek/input/{names[k]}.tif": _png(i, fmt="TIFF")
                                           for i, k in enumerate(("a0001", "a0002"))})
    experts = tmp_path / "expert_c"
    experts.mkdir()
    for i, stem in enumerate(names.values()):
        (experts / f"{stem}.tif").write_bytes(_png(10 + i, fmt="TIFF"))

    assert main(["fivek", "--input", str(inputs), "--target", str(experts), "--out", str(tmp_path / "fivek")]) == 0
    assert "left out 1 image(s) found on one side only, first: a0003" in capsys.readouterr().out
    sources = file_sources(tmp_path / "fivek" / "original", tmp_path / "fivek" / "retouch")
    assert [s.name for s in sources] == ["a0001", "a0002"]
    image, target = sources[0].load()
    assert image.shape == target.shape == (32, 40, 3)
    assert (tmp_path / "fivek" / "retouch" / "a0002.tif").read_bytes() == (experts / f"{names['a0002']}.tif").read_bytes()


def test_abpn_prepare_fivek_refuses_raw_files(tmp_path, capsys):
    from abpn_retouch.prepare import main

    raw = _zip(tmp_path / "fivek.zip", {"fivek_dataset/raw_photos/HQa1to700/photos/a0001-jmac_DSC1459.dng": b"raw"})
    line = _error_line(capsys, lambda: main(["fivek", "--input", str(raw), "--target", str(raw), "--out",
                                             str(tmp_path / "out")]))
    assert "a0001-jmac_DSC1459.dng: a raw file; render the photos to TIFF, PNG or JPEG first" in line


def test_abpn_prepare_ffhqr_keeps_the_chosen_split(tmp_path):
    from abpn_retouch.data import file_sources
    from abpn_retouch.prepare import main

    numbers = ("00000", "55999", "56000", "63000")
    ffhq = tmp_path / "images1024x1024"
    for i, n in enumerate(numbers):
        (ffhq / f"{n[:2]}000").mkdir(parents=True, exist_ok=True)
        (ffhq / f"{n[:2]}000" / f"{n}.png").write_bytes(_png(i))
    part1 = _tar(tmp_path / "ffhqr.part1.tar", {f"ffhqr/{n[:2]}000/{n}.png": _png(20 + i)
                                                for i, n in enumerate(numbers[:2])})
    part6 = _tar(tmp_path / "ffhqr.part6.tar", {f"ffhqr/{n[:2]}000/{n}.png": _png(30 + i)
                                                for i, n in enumerate(numbers[2:])})
    for split, expected in (("train", ["00000", "55999"]), ("val", ["56000"]), ("test", ["63000"])):
        out = tmp_path / split
        assert main(["ffhqr", "--input", str(ffhq), "--target", str(part1), str(part6), "--split", split,
                     "--out", str(out)]) == 0
        assert [s.name for s in file_sources(out / "original", out / "retouch")] == expected


# -------------------------------------------------------------------------------- alphagan_matting
def test_alphagan_prepare_unpacks_aim500_and_bg20k_zips_into_labels_the_dataset_reads(tmp_path):
    from alphagan_matting.dataset import MattingDataset, load_labels
    from alphagan_matting.prepare import main

    trimap = np.zeros((32, 40), np.uint8)
    trimap[8:24, 10:30], trimap[12:20, 15:25] = 128, 255
    buffer = io.BytesIO()
    Image.fromarray(trimap).save(buffer, format="PNG")
    aim = {}
    for i, stem in enumerate(("o_0a1b2c3d", "o_4e5f6a7b", "p_1c2d3e4f")):
        aim[f"AIM-500/original/{stem}.jpg"] = _png(i, fmt="JPEG")
        aim[f"AIM-500/mask/{stem}.png"] = _png(10 + i, mode="L")
        aim[f"AIM-500/trimap/{stem}.png"] = buffer.getvalue()
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    fg_zip = _zip(dataset / "AIM-500.zip", aim)
    bg_zip = _zip(dataset / "archive.zip", {"BG-20k/train/h_0a1b2c3d.jpg": _png(40, fmt="JPEG"),
                                            "BG-20k/testval/h_5e6f7a8b.jpg": _png(41, fmt="JPEG")})

    main(["unpack", str(fg_zip), str(bg_zip), "--dst", str(dataset)])
    main(["labels", "--fg", str(dataset / "AIM-500"), "--bg", str(dataset / "BG-20k"),
          "--output", str(dataset / "dataset_labels.csv")])

    rows = load_labels(dataset / "dataset_labels.csv")
    assert sorted(Path(r["original"]).stem for r in rows) == ["o_0a1b2c3d", "o_4e5f6a7b", "p_1c2d3e4f"]
    assert {r["split"] for r in rows} == {"train", "test"}
    test_rows = [r for r in rows if r["split"] == "test"]
    item = MattingDataset(test_rows, transform=lambda fg, alpha, bg, rng, trimap: (fg, alpha, bg, trimap),
                          train=False)[0]
    assert [a.shape[:2] for a in item] == [(32, 40)] * 4


# ----------------------------------------------------------------------------- gansformer_inpaint
def test_gansformer_prepare_celebahq_with_masks_gives_pairs_the_dataset_reads(tmp_path):
    from gansformer_inpaint.dataloader.loader import InpaintingDataset
    from gansformer_inpaint.prepare import main

    faces = _zip(tmp_path / "CelebAMask-HQ.zip", {f"CelebAMask-HQ/CelebA-HQ-img/{i}.jpg": _png(i, (64, 64), fmt="JPEG")
                                                   for i in range(3)})
    hole = np.zeros((48, 48), np.uint8)
    hole[10:30, 12:36] = 255
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(hole).save(masks / "00000.png")
    Image.fromarray(255 - hole).save(masks / "00001.png")

    out = tmp_path / "celeba_hq_32"
    assert main(["celebahq", "--images", str(faces), "--masks", str(masks), "--out", str(out), "--size", "32"]) == 0
    data = InpaintingDataset(out, img_size=32)
    assert len(data) == 3
    for i in range(3):
        item = data[i]
        assert item["gt"].shape == (3, 32, 32) and 0 < item["mask"].mean() < 1
        hole_px = item["mask"][0].bool()
        assert bool((item["masked"][:, hole_px] == 1).all())  # painted white inside the hole
        assert bool((item["masked"][:, ~hole_px] == item["gt"][:, ~hole_px]).all())


# --------------------------------------------------------------------------------------- neuropbr
def test_neuropbr_prepare_ambientcg_zips_then_render_gives_a_dataset_the_loader_reads(tmp_path, capsys):
    from neuropbr.prepare import main as prepare
    from neuropbr.utils.dataset import PBRDataset, load_material
    from neuropbr.utils.make_dataset import main as render

    flat = np.zeros((32, 32, 3), np.uint8)
    flat[...] = (128, 100, 255)  # a normal tilted towards -Y in OpenGL terms
    normal = io.BytesIO()
    Image.fromarray(flat).save(normal, format="PNG")
    normal_dx = flat.copy()
    normal_dx[..., 1] = 255 - normal_dx[..., 1]
    normal_dx_png = io.BytesIO()
    Image.fromarray(normal_dx).save(normal_dx_png, format="PNG")
    bark = _zip(tmp_path / "Bark014_1K-PNG.zip", {
        "Bark014_1K-PNG_Color.png": _png(1, (32, 32)), "Bark014_1K-PNG_Roughness.png": _png(2, (32, 32), "L"),
        "Bark014_1K-PNG_NormalGL.png": normal.getvalue(), "Bark014_1K-PNG_NormalDX.png": normal_dx_png.getvalue(),
        "Bark014_1K-PNG_Displacement.png": _png(3, (32, 32), "L"), "Bark014.png": _png(4, (32, 32))})
    metal = _zip(tmp_path / "Metal055A_1K-JPG.zip", {
        "Metal055A_1K-JPG_Color.jpg": _png(5, (32, 32), fmt="JPEG"),
        "Metal055A_1K-JPG_Roughness.jpg": _png(6, (32, 32), "L", fmt="JPEG"),
        "Metal055A_1K-JPG_Metalness.jpg": _png(7, (32, 32), "L", fmt="JPEG"),
        "Metal055A_1K-JPG_NormalDX.jpg": normal_dx_png.getvalue()})

    materials = tmp_path / "materials"
    assert prepare(["ambientcg", str(bark), str(metal), "--out", str(materials)]) == 0
    assert "Bark014: no metalness map, a dielectric: metallic.png is 0" in capsys.readouterr().out
    assert sorted(p.name for p in materials.iterdir()) == ["Bark014", "Metal055A"]
    bark_maps, metal_maps = load_material(materials / "Bark014"), load_material(materials / "Metal055A")
    assert float(bark_maps["metallic"].abs().max()) == 0.0
    # The DirectX-only material's normal equals the OpenGL one after the flip.
    assert float((bark_maps["normal"] - metal_maps["normal"]).abs().max()) < 0.02

    assert render([str(materials), str(tmp_path / "pbr"), "--size", "32", "--crops", "1"]) == 0
    data = PBRDataset(tmp_path / "pbr" / "input", tmp_path / "pbr" / "output", image_size=32)
    assert len(data) == 4
    inputs, targets = data[0]
    assert inputs.shape == (3, 3, 32, 32) and targets.shape == (8, 32, 32)


def test_neuropbr_prepare_refuses_a_material_without_a_normal_map(tmp_path, capsys):
    from neuropbr.prepare import main

    bad = _zip(tmp_path / "Rock053_1K-PNG.zip", {"Rock053_1K-PNG_Color.png": _png(1, (16, 16)),
                                                 "Rock053_1K-PNG_Roughness.png": _png(2, (16, 16), "L")})
    line = _error_line(capsys, lambda: main(["ambientcg", str(bad), "--out", str(tmp_path / "out")]))
    assert line.startswith("error: Rock053: no NormalGL or NormalDX map")
    assert not (tmp_path / "out").exists()
