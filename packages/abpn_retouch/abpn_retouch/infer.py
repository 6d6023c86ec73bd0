"""Full-resolution retouching of a file or a folder, tile by tile with blended overlaps.

The tiles run through PyTorch (the exact path, default) or through an exported file (``export.py``) under
ONNX Runtime or OpenVINO; every backend returns both outputs, the retouched image and the mask logits.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from abpn_retouch.data import read_full_precision
from abpn_retouch.model import ABPN
from shared.amp import PRECISIONS
from shared.checkpoint import load_checkpoint
from shared.cli import Job, resolve_jobs, run_jobs
from shared.device import DEVICE_CHOICES, resolve_device
from shared.errors import ConfigError, cli_entry
from shared.images import (
    SIXTEEN_BIT_SUFFIXES,
    describe_conversions,
    image_bit_depth,
    save_image,
    to_numpy_image,
    to_tensor,
)
from shared.tiling import tiled_forward

BACKENDS = ("torch", "onnxruntime", "openvino")
SERVING_PRECISIONS = (*PRECISIONS, "int8")
OUTPUT_NAMES = ("image", "mask_logits")
MULTIPLE_KEY = "abpn_multiple"


def load_model(checkpoint: str | Path, device: torch.device) -> ABPN:
    """The ABPN recorded in a training checkpoint (``latest.pth``/``best.pth``), in eval mode."""
    from abpn_retouch.train import build_model_from_checkpoint

    model = build_model_from_checkpoint(load_checkpoint(checkpoint))
    return model.to(device).eval()


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"this needs {module}: install the extra, e.g. `uv sync --extra {extra}`") from None


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO ``Core`` per process: starting its CPU plugin is the slow part of opening a model."""
    return _require("openvino", "openvino").Core()


class ExportedABPN:
    """An exported ABPN (``.onnx`` or OpenVINO ``.xml``) as a tile function ``(b, 3, t, t)`` →
    ``(image (b, 3, t, t), mask logits (b, 1, t/2, t/2))``, the same pair the PyTorch model returns.

    ``multiple``: the tile side must be a multiple of it (read from the file, written by ``export.py``).
    """

    def __init__(self, path: str | Path, backend: str, precision: str = "fp32", threads: int = 0) -> None:
        from shared.runtimes import file_precision

        path = Path(path)
        if backend not in ("onnxruntime", "openvino"):
            raise ConfigError(f"--backend {backend} does not run exported files: choose onnxruntime or openvino")
        if precision not in ("fp32", "bf16", "int8") or (backend == "onnxruntime" and precision == "bf16"):
            runs = "fp32 or int8" if backend == "onnxruntime" else "fp32, bf16 or int8"
            raise ConfigError(f"--backend {backend} has no {precision} CPU path: it runs {runs}")
        if not path.is_file():
            raise ConfigError(f"{path}: model file not found")
        suffixes = (".onnx",) if backend == "onnxruntime" else (".onnx", ".xml")
        if path.suffix not in suffixes:
            raise ConfigError(f"{path}: {backend} runs {' or '.join(suffixes)} files")
        stored = file_precision(path)
        if (precision == "int8") != (stored == "int8"):
            hint = "export it with --precision int8 (calibrated)" if precision == "int8" else "pass --precision int8"
            raise ConfigError(f"{path}: the file is {stored}, not {precision}: {hint}")
        self.path, self.backend, self.precision = path, backend, precision
        opened = self._onnxruntime(threads) if backend == "onnxruntime" else self._openvino(threads)
        self._run, multiple = opened
        if multiple is None:
            raise ConfigError(f"{path}: not an ABPN export (no {MULTIPLE_KEY} entry): write it with export.py")
        self.multiple = int(multiple)

    def _onnxruntime(self, threads: int) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str | None]:
        onnx = _require("onnx", "onnx")
        ort = _require("onnxruntime", "onnx")
        props = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads spinning between tile calls would only take CPU from the rest of the host.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ConfigError(f"{self.path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        names = [o.name for o in session.get_outputs()]
        if len(names) != 2:
            raise ConfigError(f"{self.path}: has {len(names)} outputs, an ABPN export has 2 (image, mask logits)")
        feed = session.get_inputs()[0].name
        return (lambda x: session.run(names, {feed: x})), props.get(MULTIPLE_KEY)

    def _openvino(self, threads: int) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str | None]:
        core = _openvino_core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if self.precision != "int8":
            # Pinned: on a CPU with bf16 units OpenVINO would pick bf16 for an fp32 request by itself.
            config["INFERENCE_PRECISION_HINT"] = "f32" if self.precision == "fp32" else "bf16"
        try:
            model = core.read_model(str(self.path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
            raise ConfigError(f"{self.path}: OpenVINO cannot load it: {str(exc).splitlines()[0]}") from None
        if len(compiled.outputs) != 2:
            raise ConfigError(f"{self.path}: has {len(compiled.outputs)} outputs, an ABPN export has 2 "
                              "(image, mask logits)")
        multiple = None
        if model.has_rt_info([MULTIPLE_KEY]):
            multiple = model.get_rt_info([MULTIPLE_KEY]).astype(str)
        elif self.path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
            multiple = props.get(MULTIPLE_KEY)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: x})
            return [np.array(result[output]) for output in compiled.outputs]  # copies: the request reuses its buffers

        return run, multiple

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, logits = self._run(x.detach().cpu().float().contiguous().numpy())
        return torch.from_numpy(image), torch.from_numpy(logits)


def open_runtime(path: str | Path, backend: str, precision: str = "fp32", threads: int = 0) -> ExportedABPN:
    """An exported ABPN under ``backend`` (``onnxruntime`` or ``openvino``); pass it to :func:`retouch`."""
    return ExportedABPN(path, backend, precision, threads)


def retouch(model: ABPN | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], image: np.ndarray, tile_size: int = 1024, overlap: int = 256, batch_size: int = 1,
            device: torch.device | None = None, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 (or float in 0..1) → retouched ``(3, H, W)`` and mask probabilities
    ``(1, H/2, W/2)`` (CPU, 0..1).

    ``model`` is an :class:`ABPN` or an :class:`ExportedABPN` (:func:`open_runtime`). The image stays in CPU
    memory; tiles travel to ``device`` ``batch_size`` at a time. ``precision`` is PyTorch's autocast (fp32,
    fp16, bf16); an exported file runs at the precision it was opened with.
    """
    x = to_tensor(image)
    output, logits = tiled_forward(lambda t: model(t), x, tile_size=tile_size, overlap=overlap,
                                   batch_size=batch_size, device=device, precision=precision)
    return output.clamp_(0, 1), torch.sigmoid(logits)


def _check_tiling(tile_size: int, overlap: int, multiple: int) -> None:
    if tile_size % multiple:
        raise ConfigError(f"--tile-size {tile_size} must be a multiple of {multiple} for this model")
    if not 0 <= overlap < tile_size or overlap % 2:
        raise ConfigError(f"--overlap must be even and in [0, --tile-size), got {overlap}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Retouch photos at full resolution with a trained ABPN.")
    parser.add_argument("--checkpoint", help="training checkpoint (latest.pth / best.pth) for --backend torch")
    parser.add_argument("--model", help="exported file (export.py) for --backend onnxruntime (.onnx) or "
                                        "openvino (.xml or .onnx)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="what runs the tiles (default: torch, the exact path)")
    parser.add_argument("--input", required=True, help="image file or folder of images")
    parser.add_argument("--output", required=True,
                        help="output .png (or .tif) for one input file, else a folder of <name>.png (and "
                             "<name>_mask.png); 16-bit inputs give 16-bit .png/.tif outputs")
    parser.add_argument("--save-mask", action="store_true", help="also write the predicted mask, full size")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side in pixels (default: 1024)")
    parser.add_argument("--overlap", type=int, default=256, help="tile overlap in pixels (default: 256)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default: 1)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=SERVING_PRECISIONS,
                        help="torch: fp32, or fp16/bf16 autocast; onnxruntime: fp32 or int8; openvino: fp32, bf16 "
                             "or int8; int8 needs a file exported with --precision int8 (default: fp32)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of onnxruntime/openvino (default: 0, the runtime's own choice)")
    return parser


def open_model(args: argparse.Namespace, device: torch.device) -> ABPN | ExportedABPN:
    """The checkpoint (``--backend torch``) or the exported file (``--model``), after checking the flags."""
    if args.backend == "torch":
        if args.model:
            raise ConfigError("--model is an exported file for --backend onnxruntime or openvino; "
                              "--backend torch reads --checkpoint")
        if not args.checkpoint:
            raise ConfigError("--backend torch needs --checkpoint (or pass --backend onnxruntime/openvino --model FILE)")
        if args.precision == "int8":
            raise ConfigError("--precision int8 is not a PyTorch path: export with export.py --precision int8 "
                              "and run it with --backend onnxruntime or openvino")
        return load_model(args.checkpoint, device)
    if args.checkpoint:
        raise ConfigError(f"--backend {args.backend} runs an exported file: pass --model FILE, not --checkpoint")
    if not args.model:
        raise ConfigError(f"--backend {args.backend} needs --model FILE (write one with export.py)")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    return open_runtime(args.model, args.backend, args.precision, args.threads)


def run(args: argparse.Namespace) -> list[Path]:
    if args.backend != "torch" and args.device not in ("auto", "cpu"):
        raise ConfigError(f"--backend {args.backend} runs on the CPU: use --device cpu (or --backend torch)")
    device = resolve_device("cpu" if args.backend != "torch" else args.device)
    model = open_model(args, device)
    _check_tiling(args.tile_size, args.overlap, model.multiple)

    jobs = resolve_jobs(args.input, args.output)
    for line in describe_conversions([job.source for job in jobs], keep_16bit=all(map(_keeps_16bit, jobs))):
        print(f"note: {line}", file=sys.stderr)

    def process(job: Job) -> list[Path]:
        # A 16-bit file is read as float32 with all its bits and written back with 16 bits.
        bit_depth = image_bit_depth(job.source)
        image = read_full_precision(job.source, bit_depth == 16)
        # An exported file runs at its own precision; autocast is PyTorch's alone.
        precision = args.precision if args.backend == "torch" else "fp32"
        output, mask = retouch(model, image, args.tile_size, args.overlap, args.batch_size, device, precision)
        written = [save_image(job.target, output, bit_depth=16 if bit_depth == 16 and _keeps_16bit(job) else 8)]
        if args.save_mask:
            full = F.interpolate(mask[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
            written.append(save_image(job.target.with_name(f"{job.target.stem}_mask.png"), to_numpy_image(full)))
        return written

    return run_jobs(jobs, process)


def _keeps_16bit(job: Job) -> bool:
    """Whether the output's format holds 16 bits (a ``--output x.jpg`` does not)."""
    return job.target.suffix.lower() in SIXTEEN_BIT_SUFFIXES


@cli_entry
def cli(argv: list[str] | None = None) -> None:
    """Console script ``abpn-infer`` (same flags as ``infer.py``)."""
    run(build_parser().parse_args(argv))
