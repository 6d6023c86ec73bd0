import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from shared.errors import DataError
from shared.images import (
    ImageReadError,
    _apply_orientation,
    describe_conversions,
    image_bit_depth,
    list_images,
    make_grid,
    pair_by_stem,
    read_image,
    read_image_size,
    save_image,
    save_image_grid,
    to_tensor,
)

ROOT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_rgb_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = save_image(tmp_path / "sub" / "a.png", rgb)
    assert np.array_equal(read_image(path), rgb)
    assert read_image(path, dtype="float32").max() <= 1.0
    assert read_image(path, mode="L").shape == (7, 9)


def test_conversions(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_save(tmp_path / "g.png", gray))
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 1], gray)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    assert read_image(_save(tmp_path / "a.png", rgba))[0, 0].tolist() == [200, 0, 0]  # alpha dropped
    deep = (np.arange(4, dtype=np.uint16).reshape(2, 2) * 20000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    as_float = read_image(tmp_path / "d.png", dtype="float32")
    assert as_float.shape == (2, 2, 3)
    assert np.allclose(as_float[..., 0], deep / 65535.0, atol=1e-6)
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = read_image(tmp_path / "c.jpg")
    assert red.shape == (3, 3, 3) and red[1, 1, 0] > 200 and red[1, 1, 1] < 60


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello")
    full = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(full, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(full.getvalue()[:200])
    cases = {"empty.png": "empty", "text.png": "not a recognised image", "cut.jpg": "truncated",
             "missing.png": "not found"}
    for name, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims ``width`` × ``height`` and whose pixel data is not even zlib."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"no pixels")
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_guard(tmp_path):
    _save(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageReadError, match="exceeds the 5000-pixel limit"):
        read_image(tmp_path / "big.png", max_pixels=5000)
    with pytest.raises(ImageReadError, match="exceeds the 5000-pixel limit"):
        read_image_size(tmp_path / "big.png", max_pixels=5000)
    assert read_image_size(tmp_path / "big.png") == (100, 100)
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    for read in (read_image, read_image_size):
        with pytest.raises(ImageReadError, match=r"bomb\.png: 20000×20000 image exceeds the 268435456-pixel"):
            read(bomb)


def test_large_photo_is_not_taken_for_a_bomb(tmp_path):
    # 108 MP (12000×9000, a phone camera) is above PIL's own 89 MP warning but below our 16384² limit:
    # the header passes, and this file then fails only because its pixel data is garbage.
    photo = _png_header_only(tmp_path / "photo.png", 12000, 9000)
    assert read_image_size(photo) == (12000, 9000)
    with pytest.raises(ImageReadError, match="unreadable or truncated") as info:
        read_image(photo)
    assert "bomb" not in str(info.value)


def test_header_size_errors_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello")
    cases = {"empty.png": "empty", "text.png": "not a recognised image", "missing.png": "not found"}
    for name, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image_size(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_list_and_pair(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for stem in ("x", "y"):
        _save(tmp_path / "a" / f"{stem}.png", np.zeros((2, 2, 3), np.uint8))
        _save(tmp_path / "b" / f"{stem}.jpg", np.zeros((2, 2, 3), np.uint8))
    pairs = pair_by_stem(tmp_path / "a", tmp_path / "b")
    assert [(p.name, q.name) for p, q in pairs] == [("x.png", "x.jpg"), ("y.png", "y.jpg")]
    _save(tmp_path / "a" / "z.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"z\.png: no matching file"):
        pair_by_stem(tmp_path / "a", tmp_path / "b")
    with pytest.raises(DataError, match="folder not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="no images found"):
        list_images(tmp_path / "c")


def test_grid_layout(tmp_path):
    a = torch.zeros(3, 4, 5)
    b = torch.ones(1, 4, 5)
    grid = make_grid([[a, b], [b]], padding=1)
    assert grid.shape == ((4 + 1) * 2 + 1, (5 + 1) * 2 + 1, 3)
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[1, 7].tolist() == [255, 255, 255]
    path = save_image_grid(tmp_path / "g.png", [[a, b]])
    assert read_image(path).shape == (4 + 2 * 2, 5 * 2 + 3 * 2, 3)
    assert to_tensor(read_image(path)).shape == (3, 8, 16)


def test_grid_labels_name_columns_and_rows():
    black = torch.zeros(3, 30, 40)
    plain = make_grid([[black, black], [black, black]])
    grid = make_grid([[black, black], [black, black]], labels=["input", "output\nmodel"])
    header = 2 * 11 + 2  # two lines of text and the padding
    assert grid.shape == (plain.shape[0] + header, plain.shape[1], 3)
    assert np.array_equal(grid[header:], plain)  # the images are where they were, below the header
    first, second = grid[:header, 2:42], grid[:header, 44:84]
    assert (first < 128).any() and (second < 128).any()  # text in each column's slot
    assert not (grid[:header, 42:44] < 128).any()  # nothing drawn across the gap between slots
    assert (second[15:24] < 128).any() and not (first[15:24] < 128).any()  # the second line is the label's own
    named = make_grid([[black], [black]], labels=["x"], row_labels=["a", "b"])
    assert named.shape[1] == plain.shape[1]  # a first column as wide as the cells, for the names
    assert (named[11 + 2 + 2 : 11 + 2 + 32, 2:42] < 128).any()  # row a's name in its cell
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        make_grid([[black], [black]], row_labels=["a"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM",
                                                              b"GIF89a", b"II*\x00", b"RIFF"]))
def test_fuzzed_bytes_give_an_image_or_the_documented_error(tmp_path, data, prefix):
    path = tmp_path / "fuzz.img"
    path.write_bytes(prefix + data)
    try:
        image = read_image(path, max_pixels=4096 * 4096)
    except ImageReadError as exc:
        assert str(path) in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


REAL_PHOTO = ROOT_DATA / "retouch" / "original" / "fivek_a2803.png"


@pytest.mark.skipif(not REAL_PHOTO.is_file(), reason="real sample images are not beside the repository")
def test_exif_orientation_6_is_read_upright_at_the_displayed_size(tmp_path):
    upright = np.asarray(Image.open(REAL_PHOTO).convert("RGB"))[:300, :200]  # portrait: 200 wide, 300 high
    # What a phone writes for a portrait shot: the pixels turned a quarter clockwise-to-store, tag 6.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=98, exif=exif)
    assert Image.open(path).size == (300, 200)
    assert read_image_size(path) == (200, 300)
    read = read_image(path)
    assert read.shape == (300, 200, 3)
    assert np.abs(read.astype(int) - upright.astype(int)).mean() < 3  # JPEG error only: not rotated
    saved = save_image(tmp_path / "out.png", read)
    assert Image.open(saved).size == (200, 300) and 0x0112 not in Image.open(saved).getexif()


def test_written_files_follow_the_umask(tmp_path):
    from shared.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        image = save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        checkpoint = save_checkpoint(tmp_path / "c.pth", {"x": torch.zeros(1)})
        os.umask(0o027)
        private = save_image(tmp_path / "b.jpg", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o640
    assert Image.open(private).format == "JPEG"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_an_unknown_suffix_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"out\.xyz: unknown image format"):
        save_image(tmp_path / "out.xyz", np.zeros((4, 4, 3), np.uint8))


def _ramp16(height=24, width=40):
    """A colour image whose values fall between 8-bit levels: 16-bit precision matters for it."""
    y, x = np.mgrid[0:height, 0:width]
    red = 1000 + 7 * x + 3 * y  # steps of 7/65535: ~37 values share each 8-bit level
    return np.stack([red, 40000 - 5 * x, 20000 + 11 * y], axis=2).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_keeps_full_precision(tmp_path, suffix):
    ramp = _ramp16()
    path = save_image(tmp_path / f"ramp{suffix}", ramp, bit_depth=16)
    assert image_bit_depth(path) == 16
    # Pillow alone gives 8-bit RGB for 48-bit files: the precision this read must keep.
    assert Image.open(path).mode == "RGB" and np.asarray(Image.open(path)).dtype == np.uint8
    read = read_image(path, dtype="float32")
    np.testing.assert_allclose(read, ramp / 65535.0, atol=1e-7)  # channel order and every level kept
    levels_8bit = np.round(read * 255) / 255
    assert np.abs(read - levels_8bit).max() > 1e-3  # values between 8-bit levels survive
    assert np.array_equal(read_image(path), np.round(ramp / 65535.0 * 255).astype(np.uint8))
    grey = read_image(path, mode="L", dtype="float32")
    np.testing.assert_allclose(grey, (ramp / 65535.0) @ np.array([0.299, 0.587, 0.114]), atol=1e-6)


def test_16bit_output_from_floats_and_its_refusals(tmp_path):
    values = torch.tensor([0.0, 0.25, 1 / 3, 1.0]).repeat(3, 2, 1)  # CHW, 3 × 2 × 4
    path = save_image(tmp_path / "out.png", values, bit_depth=16)
    read = read_image(path, dtype="float32")
    assert read.shape == (2, 4, 3)
    np.testing.assert_allclose(read[0, :, 0], [0.0, 16384 / 65535, 21845 / 65535, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match=r"out\.jpg: 16-bit output needs"):
        save_image(tmp_path / "out.jpg", values, bit_depth=16)
    assert image_bit_depth(save_image(tmp_path / "eight.png", values)) == 8


def test_exif_orientations_match_pillow():
    index = np.arange(24).reshape(4, 6)
    for orientation in range(1, 9):
        image = Image.fromarray(index.astype(np.uint8))
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
        assert np.array_equal(_apply_orientation(index, orientation), expected), orientation


def test_conversions_are_described_by_kind_count_and_first_file(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    files = [
        _save(tmp_path / "a_rgb.png", rgb),
        _save(tmp_path / "b_grey.png", rgb[..., 0]),
        _save(tmp_path / "c_grey.jpg", rgb[..., 0]),
        _save(tmp_path / "d_rgba.png", np.zeros((8, 8, 4), np.uint8)),
        save_image(tmp_path / "e_16.png", _ramp16(8, 8), bit_depth=16),
    ]
    Image.fromarray(rgb).convert("P").save(tmp_path / "f_palette.png")
    files.append(tmp_path / "f_palette.png")
    (tmp_path / "g_broken.png").write_bytes(b"not an image")
    files.append(tmp_path / "g_broken.png")
    lines = describe_conversions(files)
    assert lines == [
        f"grayscale images read as RGB: 2 of 7 (first: {files[1]})",
        f"alpha channel dropped: 1 of 7 (first: {files[3]})",
        f"16-bit images reduced to 8 bits: 1 of 7 (first: {files[4]})",
        f"palette images expanded: 1 of 7 (first: {files[5]})",
    ]
    assert not any("16-bit" in line for line in describe_conversions(files, keep_16bit=True))
    assert describe_conversions(files[:1], mode="L") == [f"colour images read as grayscale: 1 of 1 (first: {files[0]})"]
    assert describe_conversions(files[:1]) == []
    assert describe_conversions([files[1], files[1]], role="masks") == [
        f"masks: grayscale images read as RGB: 1 of 1 (first: {files[1]})"]  # listed twice, counted once
