"""Datasets (CSV-listed AIM-500-style samples, synthetic mattes), safe archive unpacking, label CSV.

The CSV (``dataset_labels.csv``) has one row per foreground: ``original``, ``trimap``, ``mask``,
``background``, ``split`` (``train``/``test``); paths are absolute or relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import os
import shutil
import stat
import sys
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset

from alphagan_matting.utils import TrimapNotes, conversion_notes, read_alpha, read_trimap, sample_seed
from shared.errors import DataError
from shared.images import read_image, read_image_size

FG_FOLDERS = ("mask", "trimap", "original")
EXTENSIONS = (".png", ".jpg", ".jpeg")
CSV_COLUMNS = ("original", "trimap", "mask", "background", "split")


# ----------------------------------------------------------------------------------------- archives
def _member_target(info: zipfile.ZipInfo, root: Path, archive: Path) -> Path:
    """Where ``info`` would land (``root`` is resolved); refuses absolute paths, drive letters and ``..``."""
    name = info.filename.replace("\\", "/")
    pure = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or pure.is_absolute():
        raise DataError(f"{archive}: refused entry '{info.filename}': absolute path")
    if ".." in pure.parts:
        raise DataError(f"{archive}: refused entry '{info.filename}': '..' would leave the destination")
    target = root.joinpath(*[p for p in pure.parts if p not in ("", ".")])
    _check_inside(target.parent.resolve(), root, archive, info.filename)
    return target


def _check_inside(path: Path, root: Path, archive: Path, entry: str, what: str = "it would land") -> None:
    if path != root and not path.is_relative_to(root):
        raise DataError(f"{archive}: refused entry '{entry}': {what} outside {root}")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _link_target(info: zipfile.ZipInfo, target: Path, link: str, root: Path, archive: Path) -> None:
    if PurePosixPath(link).is_absolute() or link.startswith("\\") or (len(link) > 1 and link[1] == ":"):
        raise DataError(f"{archive}: refused symlink '{info.filename}' -> '{link}': absolute target")
    _check_inside((target.parent / link).resolve(), root, archive, info.filename, f"symlink -> '{link}' points")


def unpack_archives(zip_path: str | os.PathLike, dst: str | os.PathLike) -> list[Path]:
    """Extract a zip archive into ``dst``; returns the files written.

    Every entry is checked before anything is written: absolute paths, ``..`` components and symlinks
    whose target leaves ``dst`` are refused with a :class:`DataError` naming the entry, and nothing is
    extracted. Symlinks that stay inside ``dst`` are recreated as links. While writing, each path is
    checked again (an existing link in ``dst`` is never written through; a link whose target leaves
    ``dst`` once earlier links exist is refused).
    """
    zip_path, dst = Path(zip_path), Path(dst)
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: archive not found")
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path}: not a zip archive")
    dst.mkdir(parents=True, exist_ok=True)
    root = dst.resolve()
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            plan = []
            for info in archive.infolist():
                target = _member_target(info, root, zip_path)
                link = None
                if _is_symlink(info):
                    link = archive.read(info).decode("utf-8", errors="replace")
                    _link_target(info, target, link, root, zip_path)
                plan.append((info, target, link))
            for info, target, link in plan:
                _check_inside(target.parent.resolve(), root, zip_path, info.filename)
                if info.is_dir():
                    if target.is_symlink():
                        raise DataError(f"{zip_path}: refused entry '{info.filename}': a link already sits there")
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _check_inside(target.parent.resolve(), root, zip_path, info.filename)
                if target.is_symlink():
                    target.unlink()  # replace the link itself, never write through it
                if link is not None:
                    _link_target(info, target, link, root, zip_path)
                    if target.exists():
                        target.unlink()
                    os.symlink(link, target)
                else:
                    with archive.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                written.append(target)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{zip_path}: corrupt zip archive ({exc})") from None
    return written


# ------------------------------------------------------------------------------------------ labels
def _index_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected mask/, trimap/ and original/ in {folder.parent})")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
            if path.stem in found:
                raise DataError(f"{path}: two files share the stem '{path.stem}' ({found[path.stem].name}, {path.name})")
            found[path.stem] = path
    if not found:
        raise DataError(f"{folder}: no images found (looked for {', '.join(EXTENSIONS)})")
    return found


def prepare_labels(fg_path: str | os.PathLike, bg_path: str | os.PathLike, output_csv: str | os.PathLike,
                   test_fraction: float = 0.1, seed: int = 1669, check_trimaps: bool = True) -> Path:
    """Write ``dataset_labels.csv`` pairing each AIM-500 sample with a background and a split.

    ``fg_path`` holds ``mask/``, ``trimap/`` and ``original/`` whose files match by stem; every stem must
    be in all three (a missing one is an error naming it and the folder). Backgrounds are searched
    recursively in ``bg_path``; each foreground gets one drawn at random (seeded). About
    ``test_fraction`` of the foregrounds (at least one when there are two or more) go to ``test``.
    """
    fg_path, bg_path, output_csv = Path(fg_path), Path(bg_path), Path(output_csv)
    if not fg_path.is_dir():
        raise DataError(f"{fg_path}: foreground folder not found")
    folders = {name: _index_by_stem(fg_path / name) for name in FG_FOLDERS}
    all_stems = sorted(set().union(*folders.values()))
    for stem in all_stems:
        missing = [name for name in FG_FOLDERS if stem not in folders[name]]
        if missing:
            have = next(folders[n][stem] for n in FG_FOLDERS if stem in folders[n])
            raise DataError(f"{have}: no file with stem '{stem}' in {', '.join(str(fg_path / m) for m in missing)}")
    if check_trimaps:
        check_trimaps_of([(folders["trimap"][stem], folders["mask"][stem]) for stem in all_stems])
    backgrounds = find_backgrounds(bg_path)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(all_stems))
    n_test = 0 if len(all_stems) < 2 else max(1, round(len(all_stems) * test_fraction))
    test_stems = {all_stems[i] for i in order[:n_test]}
    bg_choice = rng.integers(len(backgrounds), size=len(all_stems))
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(output_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for stem, b in zip(all_stems, bg_choice, strict=True):
            writer.writerow([folders["original"][stem].resolve(), folders["trimap"][stem].resolve(),
                             folders["mask"][stem].resolve(), backgrounds[int(b)].resolve(),
                             "test" if stem in test_stems else "train"])
    return output_csv


def check_trimaps_of(pairs: list[tuple[Path, Path]], say: bool = True) -> None:
    """Refuse a trimap with no unknown region or not the size of its alpha ``(trimap, mask)``; say once
    (when ``say``) how many had to be quantised (JPEG or resized trimaps), naming the first."""
    notes = TrimapNotes()
    for trimap_path, mask in pairs:
        trimap = read_trimap(trimap_path, notes)
        width, height = read_image_size(mask)
        if trimap.shape != (height, width):
            raise DataError(f"{trimap_path}: trimap is {trimap.shape[1]}x{trimap.shape[0]} but {mask} is "
                            f"{width}x{height}")
    if say and notes.line():
        print(notes.line(), file=sys.stderr)


def find_backgrounds(bg_path: str | os.PathLike) -> list[Path]:
    """Every image under ``bg_path`` (recursively), sorted; an error when there is none."""
    bg_path = Path(bg_path)
    if not bg_path.is_dir():
        raise DataError(f"{bg_path}: background folder not found")
    backgrounds = sorted(p for p in bg_path.rglob("*")
                         if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
    if not backgrounds:
        raise DataError(f"{bg_path}: no background images found (searched recursively for {', '.join(EXTENSIONS)})")
    return backgrounds


def load_labels(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a labels CSV with paths made absolute; checks columns, split names and that files exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels CSV not found (make it with prepare_data.py labels)")
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in CSV_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    checked: set[Path] = set()
    for line, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test"):
            raise DataError(f"{csv_path}: line {line}: split must be 'train' or 'test', got '{row['split']}'")
        for column in CSV_COLUMNS[:4]:
            value = (row[column] or "").strip()
            path = Path(value) if Path(value).is_absolute() else csv_path.parent / value
            if not value or not path.is_file():
                raise DataError(f"{csv_path}: line {line}: {column} file '{value}' not found")
            if path not in checked:
                # Headers only: a zero-byte, non-image or enormous file stops the run here, before the
                # models are built, instead of mid-epoch (a file cut short after its header still fails on read).
                read_image_size(path)
                checked.add(path)
            row[column] = str(path)
    return rows


# ---------------------------------------------------------------------------------------- datasets
class MattingDataset(Dataset):
    """Samples listed in a labels CSV. ``set_epoch`` changes the augmentation of every sample.

    Training samples draw their background each epoch from ``backgrounds`` (default: every background
    the rows name; the CSV's pairing then only fixes the test composites): with a handful of
    foregrounds, one fixed background each lets the network learn the background instead of the edge. The draw and a horizontal flip of the
    background come from the sample's ``(seed, epoch, index)`` stream, so resume stays exact.
    ``repeat`` lists every row that many times per epoch (index ``i`` is row ``i % len(rows)``, with
    its own augmentation).
    """

    def __init__(self, rows: list[dict[str, str]], transform, train: bool, seed: int = 0, repeat: int = 1,
                 backgrounds: list[str | os.PathLike] | None = None) -> None:
        if not rows:
            raise DataError("no samples in this split of the labels CSV")
        self.rows = rows
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.backgrounds = sorted({str(p) for p in backgrounds} if backgrounds else {row["background"] for row in rows})
        self.repeat = repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index % len(self.rows)]
        fg = read_image(row["original"], dtype="float32")
        alpha = read_alpha(row["mask"])
        if alpha.shape != fg.shape[:2]:
            raise DataError(f"{row['mask']}: size {alpha.shape[1]}x{alpha.shape[0]} differs from "
                            f"{row['original']} ({fg.shape[1]}x{fg.shape[0]})")
        trimap = None
        if not self.train:
            trimap = read_trimap(row["trimap"])
            if trimap.shape != alpha.shape:
                raise DataError(f"{row['trimap']}: size {trimap.shape[1]}x{trimap.shape[0]} differs from "
                                f"{row['original']} ({fg.shape[1]}x{fg.shape[0]})")
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch if self.train else 0, index))
        if self.train:
            bg = read_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))], dtype="float32")
            if rng.random() < 0.5:
                bg = np.ascontiguousarray(bg[:, ::-1])
        else:
            bg = read_image(row["background"], dtype="float32")
        return self.transform(fg, alpha, bg, rng=rng, trimap=trimap)

    def background_of(self, index: int, epoch: int) -> str:
        """The background file sample ``index`` is composited over in ``epoch`` (training samples)."""
        if not self.train:
            return self.rows[index % len(self.rows)]["background"]
        rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
        return self.backgrounds[int(rng.integers(len(self.backgrounds)))]


def dataset_conversion_notes(train: Dataset, test: Dataset | None) -> list[str]:
    """The conversion lines of the files a run reads, each with the mode it is read in.

    Foregrounds, alphas and backgrounds are read as float (16 bits kept); only the test split's
    trimaps are read (at 8 bits; training trimaps are made from the alphas). Synthetic data reads no file.
    """
    splits = [d for d in (train, test) if isinstance(d, MattingDataset)]
    rows = [row for d in splits for row in d.rows]
    backgrounds = [bg for d in splits if d.train for bg in d.backgrounds]
    backgrounds += [row["background"] for d in splits if not d.train for row in d.rows]
    trimaps = [row["trimap"] for d in splits if not d.train for row in d.rows]
    return conversion_notes([("foregrounds", [row["original"] for row in rows], "RGB", True),
                             ("alphas", [row["mask"] for row in rows], "L", True),
                             ("trimaps", trimaps, "L", False),
                             ("backgrounds", backgrounds, "RGB", True)])


class SyntheticMattingDataset(Dataset):
    """Procedural foregrounds with soft, hairy alpha edges over procedural backgrounds.

    The content of sample ``i`` depends only on ``(seed, i)``; its augmentation also on the epoch.
    Test samples get a trimap made from their alpha with a fixed band.
    """

    def __init__(self, length: int, size: int, transform, train: bool, seed: int = 0, repeat: int = 1) -> None:
        self.length = length
        self.repeat = repeat
        self.size = size
        self.transform = transform
        self.train = train
        self.seed = seed + (0 if train else 7919)  # disjoint content for the test split
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        content = np.random.default_rng(sample_seed(self.seed, -1 & 0xFFFF, index % self.length))
        fg, alpha, bg = synthetic_sample(self.size, content)
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch if self.train else 0, index))
        trimap = None
        if not self.train:
            from alphagan_matting.transforms.models.matting_transforms import generate_trimap

            trimap = generate_trimap(alpha, np.random.default_rng(index), 4, 4)
        return self.transform(fg, alpha, bg, rng=rng, trimap=trimap)


def _smooth_field(size: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    coarse = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    field = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(field, dtype=np.float32) / 255.0


def synthetic_sample(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fg HWC, alpha HW, bg HWC)`` float32 in 0..1: a wobbly blob with a soft rim and hair strands."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    ry, rx = rng.uniform(0.18, 0.32, 2) * size
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.12 * np.sin(rng.integers(2, 7) * angle + rng.uniform(0, 2 * np.pi))
    radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / wobble
    softness = rng.uniform(0.03, 0.12)
    body = np.clip((1.0 - radius) / softness + 0.5, 0.0, 1.0)

    hair = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(hair)
    for _ in range(int(rng.integers(20, 60))):
        theta = rng.uniform(0, 2 * np.pi)
        r0 = 0.9
        y0 = cy + r0 * ry * np.sin(theta)
        x0 = cx + r0 * rx * np.cos(theta)
        points = [(x0, y0)]
        for _ in range(int(rng.integers(3, 8))):
            theta += rng.normal(0, 0.25)
            step = rng.uniform(0.02, 0.05) * size
            x0, y0 = x0 + step * np.cos(theta), y0 + step * np.sin(theta)
            points.append((x0, y0))
        draw.line(points, fill=int(rng.integers(90, 230)), width=1)
    hair_alpha = np.asarray(hair.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
    alpha = np.maximum(body, hair_alpha).astype(np.float32)

    fg = _smooth_field(size, rng) * 0.8 + 0.1
    fg = np.clip(fg + rng.normal(0, 0.02, fg.shape).astype(np.float32), 0, 1)
    bg = _smooth_field(size, rng, cells=3)
    freq = rng.uniform(0.05, 0.3)
    stripes = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle.mean()) + yy) + rng.uniform(0, 6))
    bg = np.clip(0.7 * bg + 0.3 * stripes[..., None] * rng.random(3) + rng.normal(0, 0.03, bg.shape), 0, 1)
    return fg.astype(np.float32), alpha, bg.astype(np.float32)


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
