"""Run a converted student on three renders and write the four PBR maps (``coreml/run_inference.py``).

Pipeline, as on device: the first three images of ``--input`` (sorted by name) are resized to the
model's input size (512) with the training loader's filter, the model predicts the maps at its output size (1024 through the SR head),
and each map is upscaled to ``--final-size`` (2048) with Lanczos and saved as a lossless PNG:
``albedo.png``, ``normal.png`` (RGB = (n + 1) / 2), ``roughness.png``, ``metallic.png``.

Core ML prediction needs macOS. Elsewhere, ``--reference CHECKPOINT`` runs the same graph (the
converter's wrapper with normalisation inside) through PyTorch so the pipeline can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neuropbr.coreml.wrapper import INPUT_NAMES, OUTPUT_NAMES, DeployWrapper
from shared.errors import ConfigError, DataError, UserError, cli_entry
from shared.images import IMAGE_EXTENSIONS, list_images, save_image

DEFAULT_INPUT_SIZE = 512


def first_three(folder: str | Path) -> list[Path]:
    files = list_images(folder, IMAGE_EXTENSIONS)
    if len(files) < 3:
        raise DataError(f"{folder}: needs at least 3 images (the three views), found {len(files)}")
    return files[:3]


def load_views(paths: list[Path], size: int) -> list[Image.Image]:
    """RGB PIL images at ``size``², resized exactly as the student's training loader resizes renders
    (:func:`neuropbr.utils.dataset.load_views`: torch bilinear with antialiasing), then rounded to
    8 bits, the only form Core ML's image inputs take.

    A different filter here (PIL bicubic, say) would feed the model pixels it never saw in training.
    """
    from neuropbr.utils.dataset import load_views as load_training_views

    views = load_training_views(paths, size)  # (3, 3, S, S) in [0, 1]
    arrays = (views.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _model_metadata(path: Path) -> dict[str, str]:
    try:
        import coremltools as ct
    except ImportError:
        return {}
    try:
        return dict(ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata)
    except Exception:  # noqa: BLE001 - unreadable metadata only loses the size hint
        return {}


def predict_coreml(path: Path, views: list[Image.Image]) -> dict[str, np.ndarray]:
    try:
        import coremltools as ct
    except ImportError:
        raise UserError("coremltools is not installed: `uv sync --package neuropbr --extra coreml`") from None
    model = ct.models.MLModel(str(path))
    out = model.predict(dict(zip(INPUT_NAMES, views, strict=True)))
    return {name: np.asarray(out[name], dtype=np.float32)[0] for name in OUTPUT_NAMES}


def predict_reference(checkpoint: str, views: list[Image.Image], device: str = "cpu") -> dict[str, np.ndarray]:
    """The converter's exact graph in PyTorch: 0..1 views in, normalisation inside, SR head kept."""
    from neuropbr.student.factory import load_student

    model, cfg = load_student(checkpoint)
    wrapper = DeployWrapper(model, cfg, use_sr=True).to(device).eval()
    tensors = [torch.from_numpy(np.asarray(v, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device) for v in views]
    with torch.no_grad():
        out = wrapper(*tensors)
    return {name: value[0].float().cpu().numpy() for name, value in zip(OUTPUT_NAMES, out, strict=True)}


def to_png_array(name: str, value: np.ndarray) -> np.ndarray:
    """``(C, S, S)`` map → uint8 HWC (RGB) or HW (gray) as stored in PNG."""
    if name == "normal":
        norm = np.sqrt((value**2).sum(axis=0, keepdims=True)) + 1e-6
        value = (value / norm + 1.0) * 0.5
    image = np.clip(value, 0.0, 1.0)
    image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    return (image * 255.0 + 0.5).astype(np.uint8)


def write_maps(maps: dict[str, np.ndarray], out_dir: Path, final_size: int) -> list[Path]:
    written = []
    for name in ("albedo", "normal", "roughness", "metallic"):
        image = Image.fromarray(to_png_array(name, maps[name]))
        if image.size != (final_size, final_size):
            image = image.resize((final_size, final_size), Image.LANCZOS)
        written.append(save_image(out_dir / f"{name}.png", np.asarray(image)))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coreml/run_inference.py", description="Core ML NeuroPBR inference on three renders.")
    p.add_argument("model", help="converted .mlpackage")
    p.add_argument("--input", required=True, help="folder with at least 3 images (png/jpg); the first 3 sorted are used")
    p.add_argument("--output", required=True, help="folder for albedo.png, normal.png, roughness.png, metallic.png")
    p.add_argument("--reference", metavar="CHECKPOINT",
                   help="run the same pre/post-processing through PyTorch with this student checkpoint (any OS)")
    p.add_argument("--input-size", type=int, help="model input size (default: from the model's metadata, else 512)")
    p.add_argument("--final-size", type=int, default=2048, help="Lanczos upscale of every map (default 2048)")
    return p


def run(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    model_path = Path(args.model)
    if not args.reference and platform.system() != "Darwin":
        raise UserError(f"Core ML prediction needs macOS (this is {platform.system()}); pass --reference CHECKPOINT "
                        "to run the same pipeline through PyTorch")
    if not args.reference and not model_path.exists():
        raise DataError(f"{model_path}: Core ML model not found")
    meta = _model_metadata(model_path) if model_path.exists() else {}
    size = args.input_size or int(meta.get("neuropbr.input_size", 0)) or None
    if size is None and args.reference:
        from neuropbr.student.factory import load_student

        size = load_student(args.reference)[1].data.image_size
    size = size or DEFAULT_INPUT_SIZE
    if size % 32:
        raise ConfigError(f"--input-size must be a multiple of 32, got {size}")
    paths = first_three(args.input)
    views = load_views(paths, size)
    maps = predict_reference(args.reference, views) if args.reference else predict_coreml(model_path, views)
    written = write_maps(maps, Path(args.output), args.final_size)
    mode = "PyTorch reference" if args.reference else "Core ML"
    model_size = maps["albedo"].shape[-1]
    print(f"{mode}: {', '.join(p.name for p in paths)} at {size}² → maps at {model_size}² → Lanczos {args.final_size}²")
    print(json.dumps({"outputs": [str(p) for p in written]}))
    return written


def main(argv: list[str] | None = None) -> None:
    """Console script ``neuropbr-coreml-infer``."""
    cli_entry(run)(argv)


if __name__ == "__main__":
    main()
