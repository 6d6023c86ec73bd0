"""Image reading, writing, pairing and sample grids with one-line errors that name the file.

Every package reads user images; all of them need the same guarantees: a truncated, zero-byte,
enormous or odd-mode file gives :class:`ImageReadError` naming the file and the problem, and
grayscale, RGBA, palette, CMYK and 16-bit files are converted as documented in :func:`read_image`,
and :func:`describe_conversions` says which of a run's files such a conversion changes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFile, ImageOps, UnidentifiedImageError

from shared.errors import DataError
from shared.files import atomic_write

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# 16k × 16k: far above any photo these models see, far below a decompression bomb.
DEFAULT_MAX_PIXELS = 16384 * 16384

# PIL would otherwise pad a truncated file with grey and succeed; we want the error.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PIL's default refuses outright above 179 MP, below our documented limit, so 100+ MP photos would be
# called bombs. Raised to ours, its hard error (at twice the limit) is only a backstop: ``max_pixels`` decides.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < DEFAULT_MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS

ORIENTATION_TAG = 0x0112
LABEL_LINE_HEIGHT = 11  # PIL's default font is about 10 pixels high
BITS_PER_SAMPLE_TAG = 258  # TIFF
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

T = TypeVar("T")


class ImageReadError(DataError):
    """An image file is missing, unreadable, truncated, too large or of an unsupported kind."""


def read_image(
    path: str | os.PathLike,
    mode: Literal["RGB", "L"] = "RGB",
    dtype: Literal["uint8", "float32"] = "uint8",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` (``mode="RGB"``) or ``(H, W)`` (``"L"``) array.

    Conversions, so that callers see one layout whatever the file holds:

    * grayscale → RGB by repeating the channel; RGB → L by ITU-R 601 luma;
    * RGBA / LA / palette with transparency → the colour channels, alpha dropped;
    * CMYK / YCbCr → RGB through PIL's conversion;
    * 16-bit PNG/TIFF (grayscale or colour) and 32-bit integer/float → scaled to the target range,
      keeping full precision in ``float32`` (Pillow alone reads 16-bit colour as 8-bit, so those go
      through OpenCV);
    * an EXIF orientation tag is applied, so the array is upright at the size a viewer displays.

    ``dtype="uint8"`` gives 0..255; ``"float32"`` gives 0..1.

    Raises:
        ImageReadError: missing, zero-byte, not an image, truncated/corrupt, or more than
            ``max_pixels`` pixels (decompression-bomb guard), always naming the file.
    """

    def decode(img: Image.Image) -> np.ndarray:
        if _is_16bit_colour(img, path):
            return _read_16bit_colour(Path(path), _orientation(img), mode, dtype)
        img.load()
        return _to_array(ImageOps.exif_transpose(img), mode, dtype)

    return _with_image(Path(path), max_pixels, decode)


def read_image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels.

    Same checks and one-line errors as :func:`read_image` for missing, empty, non-image and enormous
    files; a file truncated after its header passes here and fails when it is read.
    """
    return _with_image(Path(path), max_pixels, _displayed_size)


def image_bit_depth(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """8 or 16 (bits per channel), from the file header; 32-bit integer or float files count as 16."""
    return _with_image(Path(path), max_pixels, lambda img: _bit_depth(img, Path(path)))


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    # EXIF orientations 5-8 are stored turned a quarter: a phone's portrait photo is wider than tall on disk.
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def _orientation(img: Image.Image) -> int:
    # Only the header's EXIF: ``getexif()`` may decode a whole PNG to look for a late chunk.
    exif = Image.Exif()
    if "exif" in img.info:
        exif.load(img.info["exif"])
    return int(exif.get(ORIENTATION_TAG, 1) or 1)


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk, or None for another format."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE):
        return None
    return head[24], head[25]


def _bit_depth(img: Image.Image, path: Path) -> int:
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return 16
    if img.format == "PNG":
        header = _png_header(path)
        return 16 if header is not None and header[0] == 16 else 8
    if img.format == "TIFF":
        bits = img.tag_v2.get(BITS_PER_SAMPLE_TAG, (8,))
        return 16 if max(bits if isinstance(bits, tuple) else (bits,)) > 8 else 8
    return 8


def _is_16bit_colour(img: Image.Image, path: str | os.PathLike) -> bool:
    # Pillow keeps 16-bit grayscale (mode I;16) but decodes 16-bit colour to 8-bit RGB.
    return img.mode in ("RGB", "RGBA") and _bit_depth(img, Path(path)) == 16


def _read_16bit_colour(path: Path, orientation: int, mode: str, dtype: str) -> np.ndarray:
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.ndim != 3 or data.dtype != np.uint16:
        raise ValueError("OpenCV could not decode it as a 16-bit colour image")
    rgb = _apply_orientation(data[..., 2::-1].astype(np.float32) / 65535.0, orientation)
    if mode == "L":  # the same ITU-R 601 luma weights as Pillow's RGB → L
        rgb = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(rgb) if dtype == "float32" else np.round(rgb * 255).astype(np.uint8)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """What ``ImageOps.exif_transpose`` does, on an ``(H, W, ...)`` array."""
    if orientation in (5, 6, 7, 8):
        array = np.swapaxes(array, 0, 1)  # transpose; each case below is that plus flips
        flips = {5: (), 6: (1,), 7: (0, 1), 8: (0,)}[orientation]
    else:
        flips = {2: (1,), 3: (0, 1), 4: (0,)}.get(orientation, ())
    return np.flip(array, flips) if flips else array


def _with_image(path: Path, max_pixels: int, use: Callable[[Image.Image], T]) -> T:
    """Open ``path`` with the size guard and turn every decoder failure into :class:`ImageReadError`."""
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # ``max_pixels`` below is the guard. PIL's own warning fires at 89 MP and would refuse
            # ordinary 100 MP photos; its hard error (2 × MAX_IMAGE_PIXELS) stays as a backstop.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{path}: {width}×{height} image exceeds the {max_pixels}-pixel limit "
                        "(possible decompression bomb)"
                    )
                return use(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, IndexError,
            KeyError, RuntimeError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        # PIL's decoders raise a zoo of types for corrupt input; they all mean the same to the user.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageReadError(f"{path}: unreadable or truncated image ({reason[:200]})") from None


def _to_array(img: Image.Image, mode: str, dtype: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise ValueError("image has zero width or height")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        data = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or data.max(initial=0) > 255 else 255.0
        data = np.clip(data / peak, 0.0, 1.0)
        data = np.repeat(data[..., None], 3, axis=2) if mode == "RGB" else data
        return data.astype(np.float32) if dtype == "float32" else np.round(data * 255).astype(np.uint8)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if mode == "RGB":
        img = img.convert("RGB")
    else:
        img = img.convert("RGB").convert("L") if img.mode not in ("L", "1") else img.convert("L")
    data = np.asarray(img, dtype=np.uint8)
    return data.astype(np.float32) / 255.0 if dtype == "float32" else data.copy()


def save_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor, bit_depth: Literal[8, 16] = 8) -> Path:
    """Write an image atomically, readable under the process umask; the format follows the suffix.

    Accepts a ``(C, H, W)`` / ``(H, W)`` tensor or ``(H, W, C)`` / ``(H, W)`` array; floats are taken
    as 0..1 and clipped, integers as 0..255 (``uint16`` as 0..65535 with ``bit_depth=16``).
    ``bit_depth=16`` writes 16 bits per channel, for ``.png`` and ``.tif``/``.tiff`` only.
    """
    path = Path(path)
    if bit_depth == 16:
        return _save_16bit(path, image)
    if bit_depth != 8:
        raise ValueError(f"{path}: bit_depth must be 8 or 16, got {bit_depth}")
    array = to_numpy_image(image)
    image_format = Image.registered_extensions().get(path.suffix.lower()) if path.suffix else "PNG"
    if image_format is None:
        raise ValueError(f"{path}: unknown image format {path.suffix!r} (use .png, .jpg, .tif, ...)")
    return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format=image_format))


def _save_16bit(path: Path, image: np.ndarray | torch.Tensor) -> Path:
    if path.suffix.lower() not in SIXTEEN_BIT_SUFFIXES:
        raise ValueError(f"{path}: 16-bit output needs .png, .tif or .tiff, not {path.suffix or 'no suffix'!r}")
    array = _hwc(image)
    if array.dtype != np.uint16:
        array = np.clip(np.nan_to_num(array.astype(np.float64)) * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    if array.ndim == 3:  # OpenCV stores BGR
        array = array[..., 2::-1] if array.shape[2] >= 3 else array[..., 0]
    ok, encoded = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a 16-bit image")
    return atomic_write(path, lambda handle: handle.write(encoded.tobytes()))


def _hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(H, W, C)`` / ``(H, W)`` array from a CHW (or 1×CHW) tensor or an HWC array, dtype kept."""
    if not isinstance(image, torch.Tensor):
        array = np.asarray(image)
        return array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    tensor = image.detach().to("cpu", torch.float32)
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.dim() == 3:
        tensor = tensor[0] if tensor.shape[0] == 1 else tensor.permute(1, 2, 0)
    return tensor.numpy()


def describe_conversions(paths: Iterable[str | os.PathLike], mode: Literal["RGB", "L"] = "RGB",
                         keep_16bit: bool = False, role: str | None = None) -> list[str]:
    """One line per kind of data-changing conversion :func:`read_image` will make on ``paths``.

    Reads headers only. Each line names the count and the first file, e.g.
    ``"grayscale images read as RGB: 3 of 120 (first: blur/x.png)"``; a run prints them once so that
    a user knows what happened to their data. ``keep_16bit``: the caller reads 16-bit files as float
    (no precision lost), so they are not reported. Unreadable files are left to the read to report.
    ``role`` (``"masks"``, ``"alphas"``) prefixes each line, for a run that reads several kinds of file in
    different modes; a file listed twice counts once.
    """
    paths = [Path(p) for p in dict.fromkeys(map(str, paths))]
    found: dict[str, list[Path]] = {}
    for path in paths:
        try:
            kinds = _with_image(path, DEFAULT_MAX_PIXELS, lambda img, p=path: _conversions(img, p, mode, keep_16bit))
        except ImageReadError:
            continue
        for kind in kinds:
            found.setdefault(kind, []).append(path)
    prefix = f"{role}: " if role else ""
    return [f"{prefix}{kind}: {len(files)} of {len(paths)} (first: {files[0]})" for kind, files in found.items()]


def _conversions(img: Image.Image, path: Path, mode: str, keep_16bit: bool) -> list[str]:
    kinds = []
    if not keep_16bit and _bit_depth(img, path) == 16:
        kinds.append("16-bit images reduced to 8 bits")
    grey = img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;16")
    if mode == "RGB" and grey:
        kinds.append("grayscale images read as RGB")
    if mode == "L" and not grey:
        kinds.append("colour images read as grayscale")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        kinds.append("alpha channel dropped")
    if img.mode in ("P", "PA"):
        kinds.append("palette images expanded")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        kinds.append(f"{img.mode} images converted to RGB")
    return kinds


def to_numpy_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """``uint8`` ``(H, W, 3)`` or ``(H, W)`` from a CHW tensor or HWC array (floats in 0..1)."""
    array = _hwc(image)
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` / ``(H, W)`` uint8 or float array → ``(C, H, W)`` float32 tensor in 0..1."""
    data = torch.from_numpy(np.ascontiguousarray(array))
    if data.dim() == 2:
        data = data.unsqueeze(-1)
    data = data.permute(2, 0, 1)
    return data.float().div_(255.0) if data.dtype == torch.uint8 else data.float()


def list_images(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder``; a missing, non-folder or image-less folder is a :class:`DataError`."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: no images found (looked for {', '.join(sorted(exts))})")
    return files


def pair_by_stem(dir_a: str | os.PathLike, dir_b: str | os.PathLike,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[tuple[Path, Path]]:
    """Pair the images of two folders by file name without extension (``x.jpg`` ↔ ``x.png``).

    Raises :class:`DataError` naming the first unpaired files on either side, or a stem that appears
    twice in one folder (``x.png`` and ``x.jpg``), since silently dropping training pairs hides bugs.
    """
    pairs, only_a, only_b = match_by_stem(dir_a, dir_b, extensions)
    for only, here, there in ((only_a, dir_a, dir_b), (only_b, dir_b, dir_a)):
        if only:
            raise DataError(f"{only[0]}: no matching file in {there} "
                            f"({len(only)} unpaired in {here}: {', '.join(p.stem for p in only[:5])})")
    return pairs


def match_by_stem(dir_a: str | os.PathLike, dir_b: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS
                  ) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """``(pairs, unpaired in dir_a, unpaired in dir_b)`` by file name without extension, each sorted by
    name: :func:`pair_by_stem` for a caller that uses the pairs and reports the rest. A stem twice in one
    folder is still a :class:`DataError`."""
    exts = tuple(extensions)
    side_a, side_b = _by_stem(list_images(dir_a, exts)), _by_stem(list_images(dir_b, exts))
    pairs = [(side_a[stem], side_b[stem]) for stem in sorted(side_a.keys() & side_b.keys())]
    return (pairs, [side_a[s] for s in sorted(side_a.keys() - side_b.keys())],
            [side_b[s] for s in sorted(side_b.keys() - side_a.keys())])


def _by_stem(files: Sequence[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise DataError(f"{path}: two files share the name '{path.stem}' ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    return found


def make_grid(rows: Sequence[Sequence[torch.Tensor | np.ndarray]], padding: int = 2,
              labels: Sequence[str] | None = None, row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile images into one uint8 ``(H, W, 3)`` grid: ``rows[i][j]`` goes to row ``i``, column ``j``.

    Each cell may be a CHW tensor or HWC array, 1 or 3 channels, floats in 0..1; cells are placed at
    the top-left of their slot, slots sized by the largest cell. ``labels`` name the columns in a white
    header (``"\n"`` breaks a label into lines), ``row_labels`` the rows in a first white column; a label
    is clipped to its slot, so small cells show its start rather than running into the next one.
    """
    cells = [[_rgb(to_numpy_image(c)) for c in row] for row in rows]
    if not cells or not any(cells):
        raise ValueError("make_grid needs at least one image")
    cell_h = max(c.shape[0] for row in cells for c in row)
    cell_w = max(c.shape[1] for row in cells for c in row)
    if row_labels is not None:
        if len(row_labels) != len(cells):
            raise ValueError(f"{len(row_labels)} row labels for {len(cells)} rows")
        cells = [[_text_cell(cell_w, cell_h, name, padding), *row] for row, name in zip(cells, row_labels, strict=True)]
        labels = None if labels is None else ["", *labels]
    n_cols = max(len(row) for row in cells)
    grid = np.full(((cell_h + padding) * len(cells) + padding, (cell_w + padding) * n_cols + padding, 3),
                   255, dtype=np.uint8)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            top, left = padding + i * (cell_h + padding), padding + j * (cell_w + padding)
            grid[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
    if not labels:
        return grid
    lines = max(len(label.split("\n")) for label in labels)
    header = np.full((lines * LABEL_LINE_HEIGHT + padding, grid.shape[1], 3), 255, dtype=np.uint8)
    for j, label in enumerate(list(labels)[:n_cols]):
        left = padding + j * (cell_w + padding)
        header[:, left : left + cell_w] = _text_cell(cell_w, header.shape[0], label, padding)
    return np.concatenate([header, grid], axis=0)


def save_image_grid(path: str | os.PathLike, rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
                    padding: int = 2, labels: Sequence[str] | None = None,
                    row_labels: Sequence[str] | None = None) -> Path:
    """Save :func:`make_grid` of ``rows`` (e.g. one row per sample: input | output | target | mask)."""
    return save_image(path, make_grid(rows, padding, labels, row_labels))


def _text_cell(width: int, height: int, text: str, top: int) -> np.ndarray:
    """A white ``(height, width, 3)`` cell with ``text`` in black (PIL's default font), clipped to it."""
    cell = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(cell)
    for k, line in enumerate(text.split("\n")):
        draw.text((1, top + k * LABEL_LINE_HEIGHT), line, fill="black")
    return np.asarray(cell)


def _rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]
