"""Bad input matrix (issue 10): each package's own data path × each kind of bad or odd input.

Every row builds a tiny dataset (32 px images) in the layout a package's training entry point reads,
replaces one input image (or folder, or metadata file) with the case, and calls the loader that entry
point uses, in-process. An error case must raise a :class:`~shared.errors.UserError` (so the entry
point prints ``error: <one line>`` and exits 2) whose message is one line and names the file; a
conversion case must give the sample the model expects (shape, dtype, value range, and the converted
values). One subprocess test per training entry point checks the last step: exit 2, a single
``error: …<file>…`` line, no traceback. The test ids show the matrix: ``test_bad_image[abpn_retouch-cmyk]``.

Inference entry points read their inputs with :func:`shared.images.read_image` too (checked by
:func:`test_packages_decode_images_only_through_the_shared_reader`), so the image rows hold for them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import DataError, UserError
from shared.images import ImageReadError

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32
SMALL = 8
COLOUR = (200, 60, 20)
LOW_16 = 1000  # a 16-bit value that a clip to 8 bits would turn into 255


# ------------------------------------------------------------------------------------------- files
def _noise(side: int = SIDE, seed: int = 0, gray: bool = False) -> np.ndarray:
    shape = (side, side) if gray else (side, side, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _bomb(path: Path, side: int = 20000) -> None:
    """A 1×1 PNG whose header is rewritten to claim ``side``²: under 100 bytes that would decode to 400 MP."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC, so only the size is wrong
    path.write_bytes(bytes(data))


def _write_case(case: str, target: Path, pkg: Package) -> Path:
    """Replace ``target`` by the case's file; returns its path (a CMYK JPEG gets a .jpg name where allowed)."""
    target.unlink()
    path = target
    if case == "zero_byte":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(b"these bytes are not an image\n" * 8)
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(_noise(seed=9)).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif case == "bomb":
        _bomb(path)
    elif case == "grayscale":
        _save(path, np.tile(np.arange(SIDE, dtype=np.uint8) * 8, (SIDE, 1)))
    elif case == "rgba":
        rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
        rgba[..., :3] = COLOUR
        rgba[..., 3] = np.arange(SIDE, dtype=np.uint8)[:, None] * 8  # transparent to opaque: must not tint
        _save(path, rgba)
    elif case == "16bit":
        deep = np.full((SIDE, SIDE), 65535, np.uint16)
        deep[1::2] = LOW_16
        _save(path, deep)  # PIL mode I;16
    elif case == "cmyk":
        path = target if pkg.fixed_names else target.with_suffix(".jpg")
        Image.new("RGB", (SIDE, SIDE), COLOUR).convert("CMYK").save(path, format="JPEG", quality=95)
    elif case == "small":
        for i, partner in enumerate([target, *pkg.partners]):  # partners must keep the target's size
            # A trimap needs an unknown region (grey) to be valid; a mask may be all white.
            grey = 128 if partner.parent.name == "trimap" else 255
            small = np.full((SMALL, SMALL), grey, np.uint8) if partner in pkg.gray_partners else _noise(SMALL, 20 + i)
            _save(partner, small)
    else:
        raise AssertionError(case)
    return path


# ---------------------------------------------------------------------------------------- packages
class Package:
    """How one package's training entry point reads its data, at test scale.

    ``build`` writes a valid one-sample dataset under ``root`` and returns the input image the cases
    replace; ``load`` runs the entry point's loader and returns every item; ``model_input`` is the
    tensor the model gets and ``pixels`` the replaced image in it, as ``(3, H, W)`` in 0..1.
    """

    name = ""
    fixed_names = False  # the layout fixes file names (neuropbr's 0.png), so a CMYK JPEG keeps .png
    shape: tuple[int, ...] = ()
    value_range = (0.0, 1.0)
    small_error: str | None = None  # None: smaller images are resized, as documented
    # case -> (folder to remove / folder to empty / file to add, what the error names, message fragment)
    folders: dict[str, tuple[str, str, str]] = {}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.partners: list[Path] = []  # files that must have the target's size
        self.gray_partners: list[Path] = []  # single-channel partners (mattes, trimaps)

    def build(self) -> Path:
        raise NotImplementedError

    def load(self) -> list:
        raise NotImplementedError

    def model_input(self, item) -> torch.Tensor:
        raise NotImplementedError

    def pixels(self, item) -> torch.Tensor:
        return self.model_input(item)

    def folder_case(self, case: str) -> tuple[Path, str]:
        """Apply a folder case; returns (path the error must name, message fragment)."""
        where, named, fragment = self.folders[case]
        path = self.root / where
        if case == "unpaired":
            _save(path, _noise(seed=3))
        else:
            shutil.rmtree(path)
            if case == "empty_folder":
                path.mkdir()
        return self.root / named, fragment


class DeblurUnet(Package):
    name = "deblur_unet"
    shape = (3, 16, 16)
    value_range = (-1.0, 1.0)
    small_error = "smaller than the 16×16 patch"
    folders = {"missing_folder": ("blur", ".", "expected blur/ and sharp/ folders"),
               "empty_folder": ("blur", "blur", "no images found"),
               "unpaired": ("blur/extra.png", "blur/extra.png", "no matching file in")}

    def build(self) -> Path:
        self.partners = [_save(self.root / "sharp" / "a.png", _noise(seed=1))]
        return _save(self.root / "blur" / "a.png", _noise(seed=2))

    def load(self) -> list:
        from deblur_unet.data import DeblurDataset, split_pairs
        from deblur_unet.trainer import check_pairs

        train, _ = split_pairs(self.root, 0.0, seed=0)
        check_pairs(train, 16)
        dataset = DeblurDataset.from_pairs(train, patch_size=16, is_training=True)
        return [dataset[i] for i in range(len(dataset))]

    def model_input(self, item) -> torch.Tensor:
        return item[0]

    def pixels(self, item) -> torch.Tensor:
        return (item[0] + 1) / 2


class AbpnRetouch(Package):
    name = "abpn_retouch"
    shape = (3, 16, 16)
    small_error = "smaller than --patch-size 16"
    folders = {"missing_folder": ("original", "original", "folder not found"),
               "empty_folder": ("original", "original", "no images found"),
               "unpaired": ("original/extra.png", "original/extra.png", "no matching file in")}

    def build(self) -> Path:
        self.partners = [_save(self.root / "retouch" / "a.png", _noise(seed=1))]
        return _save(self.root / "original" / "a.png", _noise(seed=2))

    def load(self) -> list:
        from abpn_retouch.data import PatchDataset, file_sources

        dataset = PatchDataset(file_sources(self.root / "original", self.root / "retouch"), 16, 16)
        return [dataset[i] for i in range(len(dataset))]

    def model_input(self, item) -> torch.Tensor:
        from abpn_retouch.data import to_model

        return to_model(item)[0]  # what the trainer does with a batch


class GansformerInpaint(Package):
    name = "gansformer_inpaint"
    shape = (3, SIDE, SIDE)
    value_range = (-1.0, 1.0)
    small_error = "is too small (min 16 px)"
    folders = {"missing_folder": ("extracted", "extracted", "folder not found"),
               "empty_folder": ("extracted", "extracted", "no images found"),
               "unpaired": ("extracted/extra.png", "extracted/extra.png", "no matching file in")}

    def build(self) -> Path:
        truth = _noise(seed=1)
        masked = truth.copy()
        masked[8:20, 8:20] = 255  # the hole, painted white as extracted/ files are
        self.partners = [_save(self.root / "ground_truth" / "a.png", truth)]
        return _save(self.root / "extracted" / "a.png", masked)

    def load(self) -> list:
        from gansformer_inpaint.dataloader import InpaintingDataset

        dataset = InpaintingDataset(self.root, img_size=SIDE)
        return [dataset[i] for i in range(len(dataset))]

    def model_input(self, item) -> torch.Tensor:
        return item["masked"]

    def pixels(self, item) -> torch.Tensor:
        return (item["masked"] + 1) / 2


class NeuroPBR(Package):
    """The teacher (``train.py``); the student (``student/train.py``) reads the same layout."""

    name = "neuropbr"
    fixed_names = True
    shape = (3, 3, SIDE, SIDE)
    folders = {"missing_folder": ("output", "output", "folder not found"),
               "empty_folder": ("input/clean", "input/clean", "No samples found")}

    def build(self) -> Path:
        self.sample(0)
        return self.root / "input" / "clean" / "sample_0000" / "0.png"

    def sample(self, index: int, views: tuple[int, ...] = (0, 1, 2)) -> Path:
        folder = self.root / "input" / "clean" / f"sample_{index:04d}"
        for v in views:
            _save(folder / f"{v}.png", _noise(seed=10 * index + v))
        material = self.root / "output" / f"material_{index}"
        for name in ("albedo", "normal"):
            _save(material / f"{name}.png", _noise(seed=5))
        for name in ("roughness", "metallic"):
            _save(material / f"{name}.png", _noise(seed=6, gray=True))
        meta = self.root / "input" / "render_metadata.json"
        entries = json.loads(meta.read_text()) if meta.is_file() else {}
        meta.write_text(json.dumps({**entries, folder.name: material.name}))
        return folder

    def load(self) -> list:
        from neuropbr.utils.dataset import PBRDataset

        # Mean 0 / std 1 keeps the views in 0..1, so the checks below read the file's values.
        dataset = PBRDataset(self.root / "input", self.root / "output", image_size=SIDE,
                             transform_mean=(0, 0, 0), transform_std=(1, 1, 1))
        return [dataset[i] for i in range(len(dataset))]

    def model_input(self, item) -> torch.Tensor:
        return item[0]

    def pixels(self, item) -> torch.Tensor:
        return item[0][0]


class NeuroPBRStudent(NeuroPBR):
    name = "neuropbr_student"

    def load(self) -> list:
        from neuropbr.student.config import StudentConfig
        from neuropbr.student.data import StudentDataset

        cfg = StudentConfig()
        cfg.data.image_size, cfg.data.output_size = SIDE, 2 * SIDE
        cfg.data.mean, cfg.data.std = [0.0] * 3, [1.0] * 3
        dataset = StudentDataset(cfg, self.root / "input", self.root / "output")
        return [dataset[i] for i in range(len(dataset))]


class AlphaganMatting(Package):
    """``prepare_data.py labels`` then ``main.py --csv``: labels CSV, then the training dataset."""

    name = "alphagan_matting"
    shape = (3, SIDE, SIDE)
    value_range = (-5.0, 5.0)  # ImageNet-normalised composite

    folders = {"missing_folder": ("AIM/mask", "AIM/mask", "folder not found"),
               "empty_folder": ("AIM/mask", "AIM/mask", "no images found"),
               "unpaired": ("AIM/original/extra.png", "AIM/original/extra.png", "no file with stem 'extra'")}

    def build(self) -> Path:
        yy, xx = np.mgrid[0:SIDE, 0:SIDE]
        radius = np.hypot(yy - SIDE / 2, xx - SIDE / 2)
        alpha = np.clip((12 - radius) * 64, 0, 255).astype(np.uint8)  # a disk with a soft rim
        trimap = np.where(alpha == 255, 255, np.where(alpha == 0, 0, 128)).astype(np.uint8)
        fg = self.root / "AIM"
        self.partners = [_save(fg / "mask" / "a.png", alpha), _save(fg / "trimap" / "a.png", trimap)]
        self.gray_partners = list(self.partners)
        _save(self.root / "bg" / "b.png", _noise(seed=4))
        return _save(fg / "original" / "a.png", _noise(seed=2))

    def load(self) -> list:
        from alphagan_matting.dataset import MattingDataset, load_labels, prepare_labels
        from alphagan_matting.transforms.trans_pipeline import build_transforms

        csv = prepare_labels(self.root / "AIM", self.root / "bg", self.root / "labels.csv")
        train_tf, _ = build_transforms(SIDE, SIDE, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

        def keep_fg(fg, alpha, bg, rng, trimap=None):
            item = train_tf(fg, alpha, bg, rng=rng, trimap=trimap)
            item["fg_file"] = torch.from_numpy(np.ascontiguousarray(fg.transpose(2, 0, 1)))
            return item

        rows = [row for row in load_labels(csv) if row["split"] == "train"]
        dataset = MattingDataset(rows, keep_fg, train=True)
        return [dataset[i] for i in range(len(dataset))]

    def model_input(self, item) -> torch.Tensor:
        return item["image"]

    def pixels(self, item) -> torch.Tensor:
        return item["fg_file"]  # the composite mixes in the background; the file's values are here


PACKAGES = {cls.name: cls for cls in (DeblurUnet, AbpnRetouch, GansformerInpaint, NeuroPBR, NeuroPBRStudent,
                                      AlphaganMatting)}

# ----------------------------------------------------------------------------------- image cases
IMAGE_ERRORS = {
    "zero_byte": "image file is empty (0 bytes)",
    "corrupt": "not a recognised image file",
    "truncated": "unreadable or truncated image",
    "bomb": "20000×20000 image exceeds the 268435456-pixel limit (possible decompression bomb)",
}


def _assert_gray(pixels: torch.Tensor) -> None:
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])
    assert pixels.std() > 0.05  # the gradient survived: not a flat fill


def _assert_colour(tolerance: float):
    def check(pixels: torch.Tensor) -> None:
        want = torch.tensor(COLOUR, dtype=torch.float32).view(3, 1, 1) / 255
        assert (pixels - want).abs().max() <= tolerance, pixels.mean(dim=(1, 2)) * 255

    return check


def _assert_16bit(pixels: torch.Tensor) -> None:
    # Scaled by 65535, not clipped to 8 bits: 65535 → 1.0 and 1000 → 0.015 (a clip would give 1.0 too).
    assert pixels.max().item() == pytest.approx(1.0, abs=1e-6)
    assert pixels.min().item() == pytest.approx(LOW_16 / 65535, abs=1 / 255)


CONVERSIONS = {
    "grayscale": _assert_gray,
    "rgba": _assert_colour(1.5 / 255),  # alpha dropped, colour kept (not premultiplied, not on white)
    "16bit": _assert_16bit,
    "cmyk": _assert_colour(6 / 255),  # JPEG is lossy
    "small": lambda pixels: None,  # resized or enlarged to the training size: shape checked below
}
IMAGE_CASES = [*IMAGE_ERRORS, "grayscale", "rgba", "16bit", "cmyk", "small"]


def _assert_one_line_naming(exc: BaseException, path: Path, fragment: str) -> None:
    assert isinstance(exc, UserError), type(exc)
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message, message
    assert str(path) in message and fragment in message, message


IMAGE_PARAMS = [pytest.param(package, case, id=f"{package}-{case}") for package in PACKAGES for case in IMAGE_CASES]


@pytest.mark.parametrize("package, case", IMAGE_PARAMS)
def test_bad_image(tmp_path, package, case):
    pkg = PACKAGES[package](tmp_path)
    bad = _write_case(case, pkg.build(), pkg)
    error = IMAGE_ERRORS.get(case) or (pkg.small_error if case == "small" else None)
    if error:
        with pytest.raises(UserError) as info:
            pkg.load()
        _assert_one_line_naming(info.value, bad, error)
        assert isinstance(info.value, ImageReadError if case in IMAGE_ERRORS else DataError)
        return
    items = pkg.load()
    sample = pkg.model_input(items[0])
    assert sample.shape == pkg.shape and sample.dtype == torch.float32
    low, high = pkg.value_range
    assert torch.isfinite(sample).all() and sample.min() >= low - 1e-6 and sample.max() <= high + 1e-6
    pixels = pkg.pixels(items[0])
    assert pixels.shape[0] == 3 and pixels.dtype == torch.float32
    CONVERSIONS[case](pixels)


# ---------------------------------------------------------------------------------- folder cases
@pytest.mark.parametrize("case", ["missing_folder", "empty_folder", "unpaired"])
@pytest.mark.parametrize("package", PACKAGES)
def test_bad_folder(tmp_path, package, case, capsys):
    pkg = PACKAGES[package](tmp_path)
    pkg.build()
    if case == "unpaired" and isinstance(pkg, NeuroPBR):
        # The spec's loader skips a sample without its three views (or maps) and says which.
        incomplete = pkg.sample(1, views=(0, 1))
        assert len(pkg.load()) == 1
        warning = capsys.readouterr().err
        assert "skipped 1 incomplete sample" in warning and str(incomplete / "2.png") in warning, warning
        return
    named, fragment = pkg.folder_case(case)
    with pytest.raises(DataError) as info:
        pkg.load()
    _assert_one_line_naming(info.value, named, fragment)


# ------------------------------------------------------------------------ metadata and label files
def _metadata_case(root: Path, case: str) -> tuple[Path, str]:
    meta = root / "input" / "render_metadata.json"
    contents = {
        "metadata_not_json": ("{not json", "malformed JSON"),
        "metadata_not_object": ("[]", "expected a JSON object"),
        "metadata_bad_entry": ('{"sample_0000": 5}', "entry 'sample_0000' must name a material folder"),
        "metadata_sample_missing": ('{"sample_9999": "material_0"}', "sample_0000"),
    }
    if case == "metadata_missing":
        meta.unlink()
        return meta, "render_metadata.json not found"
    text, fragment = contents[case]
    meta.write_text(text)
    return meta, fragment


def _labels_case(root: Path, case: str) -> tuple[Path, str]:
    csv = root / "labels.csv"
    if case == "trimap_values":
        trimap = root / "AIM" / "trimap" / "a.png"
        values = np.asarray(Image.open(trimap)).copy()
        values[values == 128] = 77  # grey values are quantised (<= 85 background): no unknown region is left
        _save(trimap, values)
        return trimap, "trimap has no unknown region"
    from alphagan_matting.dataset import prepare_labels

    prepare_labels(root / "AIM", root / "bg", csv)
    header, row = csv.read_text().splitlines()[:2]
    if case == "labels_missing":
        csv.unlink()
        return csv, "labels CSV not found"
    if case == "labels_missing_column":
        csv.write_text(header.replace(",split", "") + "\n" + row.rsplit(",", 1)[0] + "\n")
        return csv, "missing column(s) split"
    if case == "labels_bad_split":
        csv.write_text(header + "\n" + row.rsplit(",", 1)[0] + ",val\n")
        return csv, "split must be 'train' or 'test', got 'val'"
    if case == "labels_missing_file":
        csv.write_text(header + "\n" + row.replace(str(root / "AIM" / "original" / "a.png"), "gone.png") + "\n")
        return csv, "original file 'gone.png' not found"
    csv.write_bytes(b"\xff\xfe\x00bad")  # labels_not_utf8
    return csv, "malformed CSV"


METADATA_CASES = ["metadata_missing", "metadata_not_json", "metadata_not_object", "metadata_bad_entry",
                  "metadata_sample_missing"]
LABELS_CASES = ["labels_missing", "labels_missing_column", "labels_bad_split", "labels_missing_file",
                "labels_not_utf8", "trimap_values"]


@pytest.mark.parametrize("package, case", [*((p, c) for p in ("neuropbr", "neuropbr_student") for c in METADATA_CASES),
                                           *(("alphagan_matting", c) for c in LABELS_CASES)])
def test_bad_metadata(tmp_path, package, case):
    pkg = PACKAGES[package](tmp_path)
    pkg.build()
    named, fragment = (_labels_case if package == "alphagan_matting" else _metadata_case)(tmp_path, case)
    if package == "alphagan_matting" and case != "trimap_values":
        from alphagan_matting.dataset import load_labels

        load = lambda: load_labels(named)  # noqa: E731 - main.py --csv reads the file it is given
    else:
        load = pkg.load
    with pytest.raises(DataError) as info:
        load()
    _assert_one_line_naming(info.value, named, fragment)


# ---------------------------------------------------------------------------------- entry points
def _entry(package: str, tmp_path: Path) -> tuple[str, list[str]]:
    """(package folder, script, flags) of a training run over ``tmp_path``'s dataset."""
    out = str(tmp_path / "run")
    if package == "deblur_unet":
        return "deblur_unet", ["train.py", "--data-dir", str(tmp_path), "--patch-size", "16", "--val-patch-size", "16",
                               "--base-ch", "8", "--num-workers", "0", "--epochs", "1", "--tracker", "none",
                               "--checkpoint-dir", out, "--output-dir", out]
    if package == "abpn_retouch":
        return "abpn_retouch", ["trainer.py", "--image-dir", str(tmp_path / "original"), "--gt-dir",
                                str(tmp_path / "retouch"), "--patch-size", "16", "--stride", "16", "--num-workers",
                                "0", "--tracker", "none", "--device", "cpu", "--save-dir", out]
    if package == "gansformer_inpaint":
        return "gansformer_inpaint", ["main.py", "--data-root", str(tmp_path), "--img-size", "32", "--workers", "0",
                                      "--no-wandb", "--device", "cpu", "--checkpoint-dir", out]
    if package == "neuropbr":
        return "neuropbr", ["train.py", "--config", "quick_test", "--input-dir", str(tmp_path / "input"),
                            "--output-dir", str(tmp_path / "output"), "--image-size", "32", "--num-workers", "0",
                            "--device", "cpu", "--tracker", "none", "--checkpoint-dir", out]
    if package == "neuropbr_student":
        return "neuropbr", ["student/train.py", "--input-dir", str(tmp_path / "input"), "--output-dir",
                            str(tmp_path / "output"), "--shards-dir", str(tmp_path / "shards"), "--image-size", "32",
                            "--num-workers", "0", "--device", "cpu", "--tracker", "none",
                            "--checkpoint-dir", out]
    return "alphagan_matting", ["main.py", "--config", "configs/quick_test.yaml", "--csv", str(tmp_path / "labels.csv"),
                                "--device", "cpu", "--tracker", "none", "--checkpoints-dir", out]


# Each run pays for a fresh interpreter and torch import (5-20 s on two busy cores): one stays in CI.
@pytest.mark.parametrize("package", [pytest.param(p, marks=[] if p == "gansformer_inpaint" else [pytest.mark.slow])
                                     for p in PACKAGES])
def test_training_entry_point_with_a_zero_byte_image(tmp_path, package):
    pkg = PACKAGES[package](tmp_path)
    bad = _write_case("zero_byte", pkg.build(), pkg)
    if package == "alphagan_matting":
        from alphagan_matting.dataset import prepare_labels

        prepare_labels(tmp_path / "AIM", tmp_path / "bg", tmp_path / "labels.csv")
    folder, args = _entry(package, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    script, *rest = args
    proc = subprocess.run([sys.executable, str(ROOT / "packages" / folder / script), *rest], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [f"error: {bad}: image file is empty (0 bytes)"], lines
    assert not (tmp_path / "run" / "latest.pth").exists()


# ------------------------------------------------------------------------------------ guards
DECODERS = re.compile(r"Image\.open\(|cv2\.imread|imageio|tifffile|torchvision\.io|skimage\.io")
PACKAGE_FOLDERS = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


@pytest.mark.parametrize("package", PACKAGE_FOLDERS)
def test_packages_decode_images_only_through_the_shared_reader(package):
    """Any other decoder would skip the guards above (empty, corrupt, bomb, modes, 16-bit) for its files."""
    folder = ROOT / "packages" / package
    offenders = [f"{path.relative_to(folder)}:{number}: {line.strip()}"
                 for path in sorted(folder.rglob("*.py")) if "tests" not in path.relative_to(folder).parts
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if DECODERS.search(line)]
    assert not offenders, offenders


class _ReadsOneFile(torch.utils.data.Dataset):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        from shared.images import read_image

        return read_image(self.path)


def test_error_in_a_dataloader_worker_stays_one_line(tmp_path, capsys):
    """neuropbr (4 workers by default), abpn, gansformer and the student load in workers: a file that fails
    there (truncated after its header, or any file in a run that does not check headers) must still
    give the one line the entry point promises."""
    from shared.errors import cli_entry

    bad = tmp_path / "a.png"
    bad.write_bytes(b"")

    @cli_entry
    def main() -> None:
        for _ in torch.utils.data.DataLoader(_ReadsOneFile(bad), num_workers=1):
            pass

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {bad}: image file is empty (0 bytes)\n"
