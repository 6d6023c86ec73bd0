"""A phone photo with EXIF orientation 6 through every package's inference, and as an abpn_retouch training pair.

A phone stores a portrait shot turned a quarter (300 wide × 200 high on disk) with a tag that tells a
viewer to turn it back. Each inference entry point, called in-process with a tiny checkpoint, must take
such a file and write every output at the displayed size (200 × 300), upright and without the tag: the
same run on an untagged upright copy of the photo must write the same pixels. A trimap or mask is drawn
over the photo as a viewer shows it, so it is upright and untagged, as an editor saves it. The photos
are crops of the real sample images beside the repository, written with a real tag in each test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from shared.checkpoint import make_training_state, save_checkpoint

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ORIENTATION = 0x0112
WIDTH, HEIGHT = 200, 300  # displayed size; the file stores HEIGHT wide × WIDTH high


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Two CI cores shared with other jobs: more intra-op threads only wait on each other.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample images not found at {path} (they sit beside the repository)")
    return path


def _crop(path: Path, top: int = 0, left: int = 0, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        crop = np.asarray(img.convert(mode))[top : top + HEIGHT, left : left + WIDTH]
    assert crop.shape[:2] == (HEIGHT, WIDTH), f"{path} is too small for a {WIDTH}×{HEIGHT} crop"
    return np.ascontiguousarray(crop)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _phone_photo(upright: np.ndarray, tagged: Path, untagged: Path) -> tuple[Path, Path]:
    """``tagged``: ``upright`` as a phone stores it (turned, orientation 6; a JPEG, or a PNG with an eXIf
    chunk); ``untagged``: the file as a viewer shows it, turned by Pillow and saved as a PNG with no tag."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    tagged.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(tagged, quality=98, exif=exif)
    with Image.open(tagged) as stored:
        assert stored.size == (HEIGHT, WIDTH) and stored.getexif()[ORIENTATION] == 6
        shown = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert shown.shape[:2] == (HEIGHT, WIDTH)
    assert np.abs(shown.astype(int) - upright.astype(int)).mean() < 3  # compression error only: upright
    return tagged, _save(untagged, shown)


def _same_upright_outputs(from_tagged: Path, from_untagged: Path) -> np.ndarray:
    """Both outputs at the displayed size without a tag, pixel for pixel the same; returns the first."""
    with Image.open(from_tagged) as img:
        assert img.size == (WIDTH, HEIGHT), f"{from_tagged.name} is {img.size}, not the displayed size"
        assert ORIENTATION not in img.getexif(), f"{from_tagged.name} carries an orientation tag"
        out = np.asarray(img).astype(int)
    with Image.open(from_untagged) as img:
        reference = np.asarray(img).astype(int)
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() <= 1, f"{from_tagged.name} differs from the upright photo's run"
    return out


def _has_content(output: np.ndarray) -> None:
    # Guards the comparison above: a flat output would match whatever way the photo was turned.
    assert np.abs(output - output[::-1, ::-1]).mean() > 2


def test_deblur_unet_inference_writes_a_tagged_photo_upright(tmp_path):
    from deblur_unet.inference import main
    from deblur_unet.model import DeblurUNet

    blurry = _crop(sorted(_data("deblur", "blur").glob("*.png"))[0], top=100, left=150)
    photos = _phone_photo(blurry, tmp_path / "in" / "photo.jpg", tmp_path / "upright" / "photo.png")
    torch.manual_seed(0)
    model = DeblurUNet(base_ch=8)
    checkpoint = save_checkpoint(tmp_path / "model.pth", make_training_state(
        kind="deblur_unet", epoch=1, global_step=1, objects={"model": model}, extra={"model_config": model.config()}))
    outputs = [tmp_path / "out_tagged.png", tmp_path / "out_upright.png"]
    for photo, output in zip(photos, outputs, strict=True):
        assert main(["--checkpoint", str(checkpoint), "--input", str(photo), "--output", str(output),
                     "--tile-size", "64", "--overlap", "16", "--device", "cpu"]) == 0
    _has_content(_same_upright_outputs(*outputs))


def test_abpn_retouch_infer_writes_a_tagged_photo_and_its_mask_upright(tmp_path):
    from abpn_retouch.infer import cli
    from abpn_retouch.model import ABPN, ABPNConfig

    original = _crop(_data("retouch", "original", "fivek_a2803.png"))
    photos = _phone_photo(original, tmp_path / "in" / "photo.jpg", tmp_path / "upright" / "photo.png")
    torch.manual_seed(0)
    config = ABPNConfig(base_channels=8, refine_channels=4)
    model = ABPN(config)
    with torch.no_grad():  # off the identity initialisation, so the output is computed from the content
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    checkpoint = save_checkpoint(tmp_path / "model.pth", make_training_state(
        kind="abpn_retouch", epoch=1, global_step=1, objects={"model": model},
        extra={"model_config": dataclasses.asdict(config)}))
    for photo, out in zip(photos, ("out_tagged", "out_upright"), strict=True):
        cli(["--checkpoint", str(checkpoint), "--input", str(photo), "--output", str(tmp_path / out),
             "--save-mask", "--tile-size", "64", "--overlap", "16", "--device", "cpu"])
    _has_content(_same_upright_outputs(tmp_path / "out_tagged" / "photo.png", tmp_path / "out_upright" / "photo.png"))
    _same_upright_outputs(tmp_path / "out_tagged" / "photo_mask.png", tmp_path / "out_upright" / "photo_mask.png")


def test_alphagan_matting_infer_takes_a_tagged_photo_with_an_upright_trimap(tmp_path):
    from alphagan_matting.cfg_loader import load_config
    from alphagan_matting.infer import main
    from alphagan_matting.utils import build_generator

    left = 156  # the middle of the 512-wide frame, where the subject stands
    photo = _crop(_data("matting", "original", "GT01.png"), top=9, left=left)
    trimap = _crop(_data("matting", "trimap", "GT01.png"), top=9, left=left, mode="L")
    assert set(np.unique(trimap).tolist()) == {0, 128, 255}
    photos = _phone_photo(photo, tmp_path / "in" / "photo.jpg", tmp_path / "upright" / "photo.png")
    trimap_path = _save(tmp_path / "trimap" / "photo.png", trimap)
    cfg = load_config("configs/quick_test.yaml")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "model.pth", make_training_state(
        kind="alphagan_matting", epoch=1, global_step=1, objects={"generator": build_generator(cfg.model)},
        config=dataclasses.asdict(cfg)))
    for photo_path, out in zip(photos, ("tagged", "upright"), strict=True):
        main(["--checkpoint", str(checkpoint), "--image", str(photo_path), "--trimap", str(trimap_path),
              "--output", str(tmp_path / out / "alpha.png"), "--tile-size", "128", "--overlap", "32",
              "--device", "cpu"])
    alpha = _same_upright_outputs(tmp_path / "tagged" / "alpha.png", tmp_path / "upright" / "alpha.png")
    # The known regions are the upright trimap's, where it was drawn.
    assert (alpha[trimap == 255] == 255).all() and (alpha[trimap == 0] == 0).all()
    composite = _same_upright_outputs(tmp_path / "tagged" / "alpha_composite.png",
                                      tmp_path / "upright" / "alpha_composite.png")
    _has_content(composite)


def test_gansformer_inpaint_infer_takes_a_tagged_photo_with_an_upright_mask(tmp_path):
    from gansformer_inpaint.cli import infer_main
    from gansformer_inpaint.config import Config
    from gansformer_inpaint.models import Generator

    with Image.open(_data("inpainting", "mask", "celebahq_005735.png")) as img:
        mask = np.asarray(img.convert("L").resize((WIDTH, HEIGHT), Image.NEAREST))
    photo = _crop(_data("retouch", "original", "fivek_a2803.png"), left=200)
    photo[mask >= 128] = 255  # the hole is blanked, as in the spec's extracted/ images
    photos = _phone_photo(photo, tmp_path / "in" / "photo.jpg", tmp_path / "upright" / "photo.png")
    mask_path = _save(tmp_path / "mask" / "photo.png", mask)
    cfg = Config(img_size=32, base_channels=8, latent_num=4, latent_dim=32, num_heads=4).validate()
    torch.manual_seed(0)
    generator = Generator(cfg.img_size, cfg.base_channels, cfg.latent_num, cfg.latent_dim, cfg.num_heads,
                          cfg.num_gansformer_blocks)
    checkpoint = save_checkpoint(tmp_path / "model.pth", make_training_state(
        kind="gansformer_inpaint", epoch=1, global_step=1, objects={"generator": generator}, config=cfg.to_dict()))
    outputs = [tmp_path / "out_tagged.png", tmp_path / "out_upright.png"]
    for photo_path, output in zip(photos, outputs, strict=True):
        infer_main(["--checkpoint", str(checkpoint), "--image", str(photo_path), "--mask", str(mask_path),
                    "--output", str(output), "--device", "cpu"])
    filled = _same_upright_outputs(*outputs)
    _has_content(filled)
    # Outside the upright mask's hole the output is the upright photo itself.
    with Image.open(photos[1]) as img:
        shown = np.asarray(img).astype(int)
    assert np.array_equal(filled[mask < 128], shown[mask < 128])


def test_neuropbr_run_inference_takes_three_tagged_views(tmp_path):
    from neuropbr import run_inference
    from neuropbr.models.generator import MultiViewPBRGenerator
    from neuropbr.train_config import get_quick_test_config

    # The CLI takes PNG renders only (as the spec says); a PNG carries the same tag in an eXIf chunk.
    materials = ("ambientcg_Bark014", "ambientcg_Facade005", "ambientcg_Rock053")
    for i, material in enumerate(materials):
        view = _crop(_data("pbr", material, "albedo.png"), top=50 * i, left=100)
        _phone_photo(view, tmp_path / "tagged" / f"view_{i}.png", tmp_path / "upright" / f"view_{i}.png")
    cfg = get_quick_test_config()  # narrowed to a CPU-test size
    cfg.model.encoder_type, cfg.model.encoder_channels = "unet", [8, 16, 32, 64]
    cfg.model.transformer_dim, cfg.model.transformer_num_heads, cfg.model.transformer_depth = 64, 4, 1
    cfg.model.decoder_channels = [64, 32, 32, 16, 16]
    cfg.data.image_size = 32
    cfg = cfg.finalize()
    torch.manual_seed(0)
    model = MultiViewPBRGenerator(cfg, quiet=True)
    checkpoint = save_checkpoint(tmp_path / "model.pth", {"config": cfg.to_dict(),
                                                         "model_state_dict": model.state_dict()})
    for name in ("tagged", "upright"):
        assert run_inference.main(["--checkpoint", str(checkpoint), "--input-dir", str(tmp_path / name),
                                   "--out-dir", str(tmp_path / f"out_{name}"), "--device", "cpu"]) == 0
    for name in ("albedo", "roughness", "metallic", "normal", "input_0", "input_1", "input_2"):
        out = _same_upright_outputs(tmp_path / "out_tagged" / f"{name}.png", tmp_path / "out_upright" / f"{name}.png")
        if name.startswith("input"):
            _has_content(out)


def test_abpn_retouch_tagged_original_and_upright_retouch_train_aligned(tmp_path):
    """A phone original (tagged JPEG) and its retouch exported by an editor (turned, no tag) make a pair."""
    from abpn_retouch.data import PatchDataset, file_sources

    name = "fivek_a2803"
    original = _crop(_data("retouch", "original", f"{name}.png"))
    retouched = _crop(_data("retouch", "retouch", f"{name}.png"))
    _phone_photo(original, tmp_path / "original" / f"{name}.jpg", tmp_path / "shown" / f"{name}.png")
    _save(tmp_path / "retouch" / f"{name}.png", retouched)
    sources = file_sources(tmp_path / "original", tmp_path / "retouch")
    assert [source.size for source in sources] == [(HEIGHT, WIDTH)]
    dataset = PatchDataset(sources, patch_size=192, stride=96)
    for index in range(len(dataset)):
        ref, item = dataset.patches[index], dataset[index]
        window = np.s_[ref.top : ref.top + 192, ref.left : ref.left + 192]
        patch_in = item["input"].permute(1, 2, 0).numpy().astype(int)
        patch_gt = item["target"].permute(1, 2, 0).numpy()
        assert np.abs(patch_in - original[window]).mean() < 3  # compression error only
        assert np.array_equal(patch_gt, retouched[window])
        assert item["mask"].shape == (1, 96, 96)
