"""Deblur images of any size on CPU (or GPU) with tiled inference; a CLI and a Python API.

Python API, for a serverless handler or a notebook::

    from deblur_unet.inference import Deblurrer
    deblur = Deblurrer.from_checkpoint("checkpoints/best.pth")   # load weights once ...
    sharp = deblur(blurry)                                        # ... reuse for every request

    # or, with a model already in hand:
    from deblur_unet.inference import deblur_image
    sharp = deblur_image(model, blurry)

    # or an exported model under ONNX Runtime / OpenVINO (export.py; int8 files are calibrated there):
    from deblur_unet.inference import RuntimeDeblurrer
    deblur = RuntimeDeblurrer("model_int8.xml", backend="openvino", precision="int8")

``blurry`` is an ``(H, W, 3)`` uint8 array, a uint16 or float (0..1) array, or a PIL image; the result
has the same type, dtype and size. The model always computes in float: a uint16 or float input keeps its
full precision, in and out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur_unet.data import from_model_range, to_model_range, to_unit_range
from deblur_unet.model import DeblurUNet
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.cli import resolve_jobs, run_jobs
from shared.device import DEVICE_CHOICES, resolve_device
from shared.errors import ConfigError, DataError, cli_entry
from shared.images import SIXTEEN_BIT_SUFFIXES, describe_conversions, image_bit_depth, read_image, save_image
from shared.runtimes import BACKENDS, compile_module, file_precision, module_runtime, open_runtime
from shared.tiling import BLEND_MODES, NORM_STATS, tiled_forward

KIND = "deblur_unet"
TORCH_PRECISIONS = ("fp32", "bf16", "fp16")


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> DeblurUNet:
    """Rebuild a :class:`DeblurUNet` from a training checkpoint (``latest.pth``/``best.pth``), in eval mode."""
    state = load_checkpoint(checkpoint)
    if state.get("kind") != KIND:
        raise CheckpointError(f"{checkpoint}: checkpoint was written by '{state.get('kind')}', not '{KIND}'")
    extra, config = state.get("extra", {}), state.get("config", {})
    model_config = extra.get("model_config") or {
        "base_ch": config.get("base_ch", 32), "residual": config.get("residual", False)}
    model = DeblurUNet(**model_config)
    try:
        model.load_state_dict(state["state"]["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{checkpoint}: model weights do not fit DeblurUNet{model_config}: {first[:200]}") from None
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval()


@dataclass
class TilingOptions:
    """How a large image is cut: ``tile_size`` squares overlapping by ``overlap`` pixels, blended by ``blend``."""

    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    blend: str = "linear"
    margin: int = 0
    # GroupNorm statistics per tile (the plain tiled forward), or the whole image's (see --norm-stats).
    norm_stats: str = "tile"

    def validate(self) -> None:
        if self.tile_size < 16 or self.tile_size % 16:
            raise ConfigError(f"--tile-size must be a multiple of 16 (>= 16), got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(f"--overlap must be in [0, tile size {self.tile_size}), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.blend not in BLEND_MODES:
            raise ConfigError(f"--blend must be one of {', '.join(BLEND_MODES)}, got {self.blend}")
        if self.margin < 0 or (self.margin and 2 * self.margin >= self.overlap):
            raise ConfigError(f"--margin must satisfy 0 <= 2*margin < overlap ({self.overlap}), got {self.margin}")
        if self.norm_stats not in NORM_STATS:
            raise ConfigError(f"--norm-stats must be one of {', '.join(NORM_STATS)}, got {self.norm_stats}")


def _as_array(image: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8, uint16 or float from an array, or uint8 from a PIL image."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image, without importing PIL here
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16) and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"expected a uint8, uint16 or float (0..1) image, got {array.dtype}")
    return array


def _like_input(out: torch.Tensor, image: Any, array: np.ndarray) -> Any:
    """The ``(3, H, W)`` [-1, 1] output as ``image`` was given: PIL, uint8, uint16 or float32 in 0..1."""
    if hasattr(image, "convert") and hasattr(image, "size"):
        from PIL import Image

        return Image.fromarray(from_model_range(out))
    if array.dtype == np.uint8:
        return from_model_range(out)
    unit = to_unit_range(out.detach().cpu()).permute(1, 2, 0).numpy()
    if array.dtype == np.uint16:
        return np.round(unit * 65535.0).astype(np.uint16)
    return unit.astype(np.float32)


def deblur_tensor(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, options: TilingOptions,
                  device: torch.device | None = None, precision: str = "fp32") -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] → same shape, through :func:`shared.tiling.tiled_forward`."""
    # Channels-last tiles run this U-Net 1.7× faster on CPU (docs/benchmarks.md); ONNX sessions take
    # plain contiguous arrays, so only PyTorch modules get them.
    channels_last = isinstance(fn, torch.nn.Module)
    if options.norm_stats != "tile" and not channels_last:
        raise ConfigError(f"--norm-stats {options.norm_stats} needs a PyTorch model (--checkpoint), not an ONNX one")
    if channels_last:
        fn = fn.to(memory_format=torch.channels_last)
    return tiled_forward(fn, x, tile_size=options.tile_size, overlap=options.overlap,
                         batch_size=options.batch_size, mode=options.blend, device=device,
                         precision=precision, margin=options.margin, channels_last=channels_last,
                         norm_stats=options.norm_stats)


def deblur_image(model: Callable[[torch.Tensor], torch.Tensor], image: Any, tile_size: int = 512,
                 overlap: int = 64, batch_size: int = 4, blend: str = "linear", margin: int = 0,
                 device: str | torch.device | None = None, precision: str = "fp32", norm_stats: str = "tile") -> Any:
    """Deblur one image at full resolution with tiling.

    Args:
        model: a :class:`DeblurUNet` (or any callable mapping ``(b, 3, t, t)`` in [-1, 1] to the same).
        image: ``(H, W, 3)`` uint8, uint16 or float (0..1) array, or a PIL image; any size.
        device: where the model runs (default: where its parameters are).
        norm_stats: ``tile`` (each tile's own GroupNorm statistics), ``image`` (the whole image's, exact,
            ~7× the time) or ``downscaled`` (estimated from a copy no larger than one tile); see
            :func:`shared.tiling.tiled_forward`.

    Returns:
        The deblurred image as the same type and dtype as ``image`` (float arrays: float32 in 0..1),
        same size.
    """
    options = TilingOptions(tile_size, overlap, batch_size, blend, margin, norm_stats)
    options.validate()
    array = _as_array(image)
    if device is None and isinstance(model, torch.nn.Module):
        device = next(model.parameters()).device
    x = to_model_range(array).unsqueeze(0)
    out = deblur_tensor(model, x, options, torch.device(device) if device else None, precision)
    return _like_input(out[0], image, array)


def training_tiling(checkpoint: str | Path) -> TilingOptions:
    """Tiles the size of the checkpoint's training patches, overlapping by a quarter of it.

    GroupNorm normalises over the whole tile, so a tile much larger than the patches the model was
    trained on gives it statistics it never saw: on the learning benchmark's frames, models trained on
    128-px patches scored 0.01–0.06 dB more (0.15 on one frame) with 128-px tiles than with 512-px ones
    (README, "Recommended recipe on real data"). Checkpoints without a recorded patch size get the
    default tiling.
    """
    patch = load_checkpoint(checkpoint).get("config", {}).get("patch_size")
    if not patch:
        return TilingOptions()
    return TilingOptions(tile_size=int(patch), overlap=int(patch) // 4)


class Deblurrer:
    """Weights loaded once, reused for every image: what a long-lived server or handler keeps.

    PyTorch runs the model: ``precision`` fp32 (exact), bf16 or fp16 autocast; ``compile`` runs it through
    ``torch.compile`` (inductor, frozen weights), which compiles on the first image (minutes on a small
    CPU) and once more for every new tile batch shape.
    """

    def __init__(self, model: DeblurUNet, options: TilingOptions | None = None,
                 device: str | torch.device = "cpu", precision: str = "fp32", compile: bool = False) -> None:
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"--precision {precision} is not a PyTorch path (choose {', '.join(TORCH_PRECISIONS)}): "
                              "int8 runs an exported, calibrated model with --backend onnxruntime or openvino")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.options = options or TilingOptions()
        self.options.validate()
        self.precision = precision
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if compile:
            if self.options.norm_stats != "tile":
                raise ConfigError(f"--compile runs the plain tiled forward: --norm-stats {self.options.norm_stats} "
                                  "needs the eager model's GroupNorm hooks")
            # Channels-last before compiling: the compiled graph keeps the layout it was traced with.
            self._forward = compile_module(self.model.to(memory_format=torch.channels_last))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", backend: str = "torch",
                        precision: str | None = None, compile: bool = False, threads: int = 0,
                        **tiling: Any) -> Deblurrer | RuntimeDeblurrer:
        """Load ``checkpoint`` once; ``tiling`` are :class:`TilingOptions` fields.

        ``backend`` ``onnxruntime`` or ``openvino`` converts the model in memory and returns a
        :class:`RuntimeDeblurrer` (fp32, or bf16 under OpenVINO; int8 needs an exported, calibrated file).
        """
        options = TilingOptions(**tiling)
        model = load_model(checkpoint, "cpu")
        if backend == "torch":
            return cls(model, options, device, precision or "fp32", compile)
        if compile:
            raise ConfigError(f"--compile applies to --backend torch, not {backend}")
        return RuntimeDeblurrer(model, backend, precision, options, threads, name=str(checkpoint))

    def __call__(self, image: Any) -> Any:
        o = self.options
        return deblur_image(self._forward, image, o.tile_size, o.overlap, o.batch_size, o.blend, o.margin,
                            self.device, self.precision, o.norm_stats)


class RuntimeDeblurrer:
    """The same tiling with ONNX Runtime or OpenVINO on the CPU (extras ``onnx``, ``openvino``).

    ``model`` is an exported file (``.onnx`` for either backend, ``.xml`` for OpenVINO) or a
    :class:`DeblurUNet`, converted in memory (float precisions only). ``precision`` ``None`` takes what
    the file holds (fp32 for a module); a precision the file does not hold is refused, never emulated.
    ``name`` is what error messages call an in-memory model (its checkpoint, say).
    """

    def __init__(self, model: str | Path | torch.nn.Module, backend: str = "onnxruntime", precision: str | None = None,
                 options: TilingOptions | None = None, threads: int = 0, name: str = "model") -> None:
        self.options = options or TilingOptions()
        self.options.validate()
        if self.options.norm_stats != "tile":
            raise ConfigError(f"--norm-stats {self.options.norm_stats} needs a PyTorch model (--checkpoint with "
                              f"--backend torch), not {backend}")
        if backend not in ("onnxruntime", "openvino"):
            raise ConfigError(f"--backend {backend} is not a runtime for exported models: choose onnxruntime or openvino")
        if isinstance(model, torch.nn.Module):
            self.precision = precision or "fp32"
            example = torch.zeros(1, 3, 64, 64)  # traced once; height and width stay dynamic
            self.run_tiles = module_runtime(model, backend, self.precision, example, threads, name)
        else:
            path = Path(model)
            readable = path.is_file() and path.suffix in (".onnx", ".xml")
            self.precision = precision or (file_precision(path) if readable else "fp32")
            self.run_tiles = open_runtime(path, backend, self.precision, threads)
        self.backend = backend

    def __call__(self, image: Any) -> Any:
        o = self.options
        return deblur_image(self.run_tiles, image, o.tile_size, o.overlap, o.batch_size, o.blend, o.margin,
                            "cpu")


class OnnxDeblurrer(RuntimeDeblurrer):
    """``RuntimeDeblurrer(onnx_path, "onnxruntime")``: an exported ONNX file at the precision it holds."""

    def __init__(self, onnx_path: str | Path, options: TilingOptions | None = None, threads: int = 0) -> None:
        super().__init__(onnx_path, "onnxruntime", None, options, threads)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deblur-infer", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Deblur an image or a folder of images at full resolution (tiled), writing PNGs.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="training checkpoint (best.pth / latest.pth)")
    source.add_argument("--onnx", help="ONNX model from export.py, run with onnxruntime (= --backend onnxruntime "
                        "--model FILE)")
    source.add_argument("--model", help="exported model (export.py): .onnx for onnxruntime or openvino, .xml for openvino")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True,
                        help="output PNG (for a file input) or folder (for a folder input, or any input)")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--blend", choices=BLEND_MODES, default="linear", help="how overlapping tiles are blended")
    parser.add_argument("--margin", type=int, default=0,
                        help="pixels at interior tile edges given zero weight (overlap-tile); 2*margin < overlap")
    parser.add_argument("--norm-stats", choices=NORM_STATS, default="tile",
                        help="GroupNorm statistics per tile, from the whole image (exact, ~7x slower), or "
                             "estimated from a copy downscaled to one tile (rough when that is much smaller)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="PyTorch device")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="what runs the model (default: torch for --checkpoint, onnxruntime for --onnx, by the "
                             "suffix for --model: .xml openvino, .onnx onnxruntime); onnxruntime/openvino with "
                             "--checkpoint convert it in memory (fp32, or bf16 with openvino)")
    parser.add_argument("--precision", choices=(*TORCH_PRECISIONS, "int8"), default=None,
                        help="torch: fp32 or bf16/fp16 autocast; onnxruntime: fp32 or int8; openvino: fp32, bf16 or "
                             "int8; int8 needs a file exported with --precision int8 (default: fp32, or what the "
                             "--model file holds)")
    parser.add_argument("--compile", action="store_true",
                        help="--backend torch: torch.compile (inductor, frozen weights); the first image compiles")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = the backend's default)")
    parser.add_argument("--recursive", action="store_true", help="also deblur images in sub-folders")
    return parser


def build_engine(args: argparse.Namespace, options: TilingOptions) -> Deblurrer | RuntimeDeblurrer:
    """The deblurrer the flags ask for; every combination that cannot run is refused here, before any output."""
    model_file = args.model or args.onnx
    backend = args.backend or ("onnxruntime" if args.onnx else "torch")
    if args.model and not args.backend:
        backend = "openvino" if Path(args.model).suffix == ".xml" else "onnxruntime"
    if args.onnx and backend != "onnxruntime":
        raise ConfigError(f"--onnx runs under onnxruntime, not --backend {backend}: use --model {args.onnx}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if backend == "torch":
        if model_file:
            raise ConfigError(f"--backend torch runs --checkpoint, not the exported {model_file}: "
                              "add --backend onnxruntime or openvino")
        if args.precision == "int8":
            raise ConfigError("--precision int8 is not a PyTorch path: export an int8 model (export.py --precision "
                              "int8 --calibration-dir DIR) and run it with --backend onnxruntime or openvino")
        if args.threads:
            torch.set_num_threads(args.threads)
        return Deblurrer(load_model(args.checkpoint, "cpu"), options, args.device, args.precision or "fp32",
                         args.compile)
    if args.compile:
        raise ConfigError(f"--compile applies to --backend torch, not {backend}")
    if args.device not in ("auto", "cpu"):
        raise ConfigError(f"--backend {backend} runs on the CPU: --device {args.device} applies to --backend torch")
    if args.precision == "fp16":
        raise ConfigError(f"--precision fp16 is a PyTorch autocast precision, not one of {backend}'s")
    if model_file:
        return RuntimeDeblurrer(model_file, backend, args.precision, options, args.threads)
    if args.precision == "int8":
        raise ConfigError(f"{args.checkpoint}: --precision int8 needs an exported, calibrated model: export.py "
                          "--precision int8 --calibration-dir DIR, then --model FILE")
    return RuntimeDeblurrer(load_model(args.checkpoint, "cpu"), backend, args.precision, options, args.threads,
                            name=args.checkpoint)


def run(args: argparse.Namespace) -> list[Path]:
    options = TilingOptions(args.tile_size, args.overlap, args.batch_size, args.blend, args.margin,
                            args.norm_stats)
    options.validate()
    jobs = resolve_jobs(args.input, args.output, recursive=args.recursive)
    # A 16-bit file keeps its 16 bits where the output format can hold them; a JPEG output cannot.
    keep_16bit = all(job.target.suffix.lower() in SIXTEEN_BIT_SUFFIXES for job in jobs)
    for line in describe_conversions([job.source for job in jobs], keep_16bit=keep_16bit):
        print(f"note: {line}", file=sys.stderr)
    engine = build_engine(args, options)

    def process(job) -> list[Path]:
        if keep_16bit and image_bit_depth(job.source) == 16:
            # Read as float, not rounded to bytes: the model sees every bit the file holds.
            sharp = engine(read_image(job.source, dtype="float32"))
            return [save_image(job.target, sharp, bit_depth=16)]
        return [save_image(job.target, engine(read_image(job.source, dtype="uint8")))]

    return run_jobs(jobs, process)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
