"""CPU deployment: each serving runtime of the trained deblur U-Nets and ABPN, timed against the hardware's floor.

Usage (from the repository root; the benchmark group, not CI)::

    uv run --frozen --all-packages --all-extras --group benchmark python -m tests.benchmarks.bench_deploy \
        --out DIR [--models deblur,abpn] [--only VARIANTS] [--threads 2] [--repeat N] [--max-minutes M] [--quick]

Models (trained checkpoints, ``--deblur32`` / ``--deblur8`` / ``--abpn`` to point elsewhere):

* ``deblur32``: the deblur U-Net at the package's default width, 2048×2048, tiles 512 overlap 64, 4 per batch.
* ``deblur8``: the learning benchmark's base-8 U-Net, same input and tiling.
* ``abpn``: ABPN at 6000×4000 with its inference defaults (tiles 1024 overlap 256, one per batch).

``deblur`` selects both U-Nets. Variants (``--only`` takes a comma list; ``eager_fp32`` always runs, it
is the reference): ``eager_fp32`` (channels-last where the package uses it), ``eager_bf16`` (autocast),
``compile_fp32`` / ``compile_bf16`` (inductor with freezing), ``ort_fp32``, ``ort_int8`` (static QDQ,
calibrated on crops of the training-split photos), ``ov_default`` (OpenVINO with no precision hint),
``ov_fp32``, ``ov_int8`` (NNCF, same calibration crops). For the U-Nets, ``tile704`` and ``untiled``
re-run the fastest variant that keeps the held-out PSNR within 0.1 dB of fp32 eager (``--retile`` names
another) with tiles 704 overlap 32 (3×3 tiles cover 2048 with 6 % overlap work instead of 56 %) and
with one untiled forward.

Every variant runs in its own forked process: load/build time, warm-up time (one tile batch, plus the
smaller last batch when there is one, so a compiled graph's second shape is built here too) and the timed
run (median of ``--repeat``, default 1) are reported apart, with the process's peak resident memory.
A variant whose warm-up outlasts ``--max-minutes`` (default 15), or whose run, estimated from one more
tile batch, would, is stopped and reported as such (bf16 without bf16 units can be that slow).
Then, in the same process, the held-out real pairs at their own size and with the same tiling give the
PSNR against the sharp (deblur) or retouched (ABPN) target. The benchmark inputs are built from the
held-out real photos (no real photo is 2048² or 6000×4000): see :func:`mosaic`.

The floor: FLOPs of the tiled work (``torch.utils.flop_counter`` on one tile × number of tiles;
convolutions and matrix products only) ÷ the peak of a large matrix product in the variant's precision
measured here (fp32 and bf16: ``torch.matmul``; int8: the faster of ``torch._int_mm`` and ONNX Runtime's
``MatMulInteger``).

Writes ``DIR/deploy.json`` and ``DIR/deploy.md``; exported models stay in ``DIR/work/<model>/``.
``--quick`` shrinks the inputs (512² deblur, 1024×768 ABPN with tiles 512/128), the calibration set and
the matrix sizes, evaluates one held-out pair, and leaves out the ``torch.compile`` variants unless
``--only`` names them (compiling takes minutes whatever the size): a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tests.benchmarks.common import ROOT, median_seconds, run_forked

DATA = ROOT.parent / "shared" / "data"
# Trained checkpoints, one flag per model: the learning benchmark's runs (deblur base 8, ABPN) and a
# base-32 U-Net trained with the same recipe (docs/benchmarks.md says how).
CHECKPOINTS = {
    "deblur32": "deblur U-Net, base 32",
    "deblur8": "deblur U-Net, base 8 (the learning benchmark's)",
    "abpn": "ABPN (the learning benchmark's)",
}


@dataclass(frozen=True)
class Tiling:
    tile: int | None  # None: one untiled forward
    overlap: int = 0
    batch: int = 1

    @property
    def label(self) -> str:
        return "untiled" if self.tile is None else f"{self.tile}/{self.overlap}×{self.batch}"


@dataclass(frozen=True)
class ModelSpec:
    key: str
    kind: str  # deblur | abpn
    height: int
    width: int
    tiling: Tiling
    channels_last: bool  # as the package's own inference does


MODELS = {
    "deblur32": ModelSpec("deblur32", "deblur", 2048, 2048, Tiling(512, 64, 4), True),
    "deblur8": ModelSpec("deblur8", "deblur", 2048, 2048, Tiling(512, 64, 4), True),
    "abpn": ModelSpec("abpn", "abpn", 4000, 6000, Tiling(1024, 256, 1), False),
}
QUICK = {
    "deblur32": ModelSpec("deblur32", "deblur", 512, 512, Tiling(512, 64, 4), True),
    "deblur8": ModelSpec("deblur8", "deblur", 512, 512, Tiling(512, 64, 4), True),
    "abpn": ModelSpec("abpn", "abpn", 768, 1024, Tiling(512, 128, 1), False),
}


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str  # torch | torch.compile | onnxruntime | openvino
    precision: str  # fp32 | bf16 | int8 | default


VARIANTS = {v.name: v for v in (
    Variant("eager_fp32", "torch", "fp32"),
    Variant("eager_bf16", "torch", "bf16"),
    Variant("compile_fp32", "torch.compile", "fp32"),
    Variant("compile_bf16", "torch.compile", "bf16"),
    Variant("ort_fp32", "onnxruntime", "fp32"),
    Variant("ort_int8", "onnxruntime", "int8"),
    Variant("ov_default", "openvino", "default"),
    Variant("ov_fp32", "openvino", "fp32"),
    Variant("ov_int8", "openvino", "int8"),
)}
RETILINGS = {"tile704": Tiling(704, 32, 4), "untiled": Tiling(None)}
REFERENCE = "eager_fp32"
QUALITY_RULE_DB = 0.1  # a deployment variant may cost at most this much held-out PSNR


# ----------------------------------------------------------------------------------------------- data
def split_pairs(data: Path, kind: str) -> dict[str, list[tuple[Path, Path]]]:
    """The learning benchmark's split of the real pairs: ``{"train": [(input, target)], "eval": [...]}``."""
    from tests.benchmarks.learning.all import SPLITS

    category, held_out, _ = SPLITS["deblur_unet" if kind == "deblur" else "abpn_retouch"]
    source, target = ("blur", "sharp") if kind == "deblur" else ("original", "retouch")
    folder = data / category
    inputs = sorted((folder / source).glob("*.png"))
    if not inputs:
        raise SystemExit(f"error: {folder / source}: no .png images (pass --data)")
    sides: dict[str, list[tuple[Path, Path]]] = {"train": [], "eval": []}
    for path in inputs:
        sides["eval" if path.stem in held_out else "train"].append((path, folder / target / path.name))
    return sides


def read_rgb(path: Path) -> np.ndarray:
    from shared.images import read_image

    return read_image(path, dtype="uint8")


def mosaic(photos: list[np.ndarray], height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """A ``rows × cols`` grid of the photos, cycled; repeats are mirrored left-right, top-bottom, then
    transposed, so up to eight times as many cells as photos differ. Each photo is resized (bicubic) to
    its cell where their sizes differ."""
    from PIL import Image

    out = np.empty((height, width, 3), np.uint8)
    tops = np.linspace(0, height, rows + 1).round().astype(int)
    lefts = np.linspace(0, width, cols + 1).round().astype(int)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        photo = photos[i % len(photos)]
        turn = i // len(photos)
        if turn % 2:
            photo = photo[:, ::-1]
        if turn // 2 % 2:
            photo = photo[::-1]
        if turn // 4 % 2:
            photo = photo.transpose(1, 0, 2)
        h, w = tops[r + 1] - tops[r], lefts[c + 1] - lefts[c]
        if photo.shape[:2] != (h, w):
            photo = np.asarray(Image.fromarray(np.ascontiguousarray(photo)).resize((w, h), Image.BICUBIC))
        out[tops[r] : tops[r + 1], lefts[c] : lefts[c + 1]] = photo
    return out


def grid_for(spec: ModelSpec, photos: list[np.ndarray]) -> tuple[int, int, str]:
    """Rows, columns and a description of how the benchmark input is built."""
    if spec.kind == "deblur":
        # The GoPro crops are 512²: a grid of them at native size keeps the blur's scale.
        side = photos[0].shape[0]
        rows, cols = max(spec.height // side, 1), max(spec.width // side, 1)
        how = "at native size" if rows * side == spec.height and cols * side == spec.width else "resized"
    else:
        rows = cols = 3
        how = "each resized (bicubic) to its cell"
    used = min(len(photos), rows * cols)
    return rows, cols, (f"{rows}×{cols} mosaic of {used} held-out real photo{'s' * (used > 1)}"
                        f"{' (repeats mirrored)' if rows * cols > used else ''}, {how}")


def to_model_input(kind: str, image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → what the package's inference feeds its tiler: ``(1, 3, H, W)``."""
    if kind == "deblur":
        from deblur_unet.data import to_model_range

        return to_model_range(image).unsqueeze(0)
    from shared.images import to_tensor

    return to_tensor(image).unsqueeze(0)


def to_unit(kind: str, output: torch.Tensor) -> torch.Tensor:
    """The model's main output in 0..1, as the package writes it (before 8-bit rounding)."""
    if kind == "deblur":
        return ((output.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return output.float().clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------- models
def load(spec: ModelSpec, checkpoint: str) -> torch.nn.Module:
    if spec.kind == "deblur":
        from deblur_unet.inference import load_model

        return load_model(checkpoint, "cpu")
    from abpn_retouch.infer import load_model

    return load_model(checkpoint, torch.device("cpu"))


def files_of(work: Path) -> dict[str, Path]:
    return {"onnx_fp32": work / "model_fp32.onnx", "onnx_int8": work / "model_int8.onnx",
            "ov_fp32": work / "model_fp32.xml", "ov_int8": work / "model_int8.xml"}


def prepare(spec: ModelSpec, checkpoint: str, work: str, calibration: str, count: int, threads: int,
            wanted: list[str]) -> dict:
    """Export the files the wanted variants need (ONNX, int8 ONNX, OpenVINO IR fp32 and int8), count FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from shared import runtimes

    torch.set_num_threads(threads)
    os.chdir(work)  # the quantisers write scratch files to the working directory
    model = load(spec, checkpoint)
    tile = spec.tiling.tile
    example = torch.zeros(1, 3, tile, tile)
    files = files_of(Path(work))
    pool = [to_model_input(spec.kind, im)[0] for im in np.load(calibration)]
    batches = runtimes.calibration_batches(pool, tile, count, seed=0)
    seconds: dict[str, float] = {}

    def timed(name: str, make: Callable[[], object]) -> None:
        start = time.perf_counter()
        make()
        seconds[name] = round(time.perf_counter() - start, 2)

    needs = {VARIANTS[v].backend + "/" + VARIANTS[v].precision for v in wanted}
    if needs & {"onnxruntime/fp32", "onnxruntime/int8"}:
        timed("onnx_fp32", lambda: runtimes.export_onnx(model, files["onnx_fp32"], example))
    if "onnxruntime/int8" in needs:
        timed("onnx_int8", lambda: runtimes.quantize_onnx_int8(files["onnx_fp32"], files["onnx_int8"], batches))
    if needs & {"openvino/fp32", "openvino/default"}:
        timed("ov_fp32", lambda: runtimes.export_openvino(model, files["ov_fp32"], example))
    if "openvino/int8" in needs:
        timed("ov_int8", lambda: runtimes.export_openvino(model, files["ov_int8"], example, batches))

    meta = copy.deepcopy(model).to("meta")

    def flops(shape: tuple[int, ...]) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(torch.empty(shape, device="meta"))
        return int(counter.get_total_flops())

    return {"export_s": seconds, "tile_flops": flops((1, 3, tile, tile)), "calibration_crops": len(batches),
            "image_flops": flops((1, 3, spec.height, spec.width)) if spec.kind == "deblur" else None}


# ----------------------------------------------------------------------------------------------- runtimes
def _floats(out: object) -> object:
    return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def torch_tile_fn(model: torch.nn.Module, precision: str, compile: bool) -> Callable[[torch.Tensor], object]:
    """The module as a tile function, for any number of outputs (``shared.runtimes.torch_runtime`` takes one)."""
    fn: Callable[[torch.Tensor], object] = model
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        fn = torch.compile(model, dynamic=False)
    dtype = torch.bfloat16 if precision == "bf16" else None

    @torch.inference_mode()
    def run(x: torch.Tensor) -> object:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return _floats(fn(x))

    return run


def ort_tile_fn(path: Path, threads: int) -> Callable[[torch.Tensor], object]:
    """An ONNX Runtime session returning every output (ABPN's image and mask logits), options as
    ``shared.runtimes.onnxruntime_runtime`` sets them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> object:
        outs = tuple(torch.from_numpy(o) for o in session.run(None, {name: x.float().contiguous().numpy()}))
        return outs if len(outs) > 1 else outs[0]

    return run


def ov_tile_fn(path: Path, threads: int, hint: str | None) -> tuple[Callable[[torch.Tensor], object], str]:
    """An OpenVINO compiled model returning every output; ``hint`` None leaves the precision to OpenVINO.

    Also returns the precision OpenVINO settled on."""
    import openvino as ov

    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(x: torch.Tensor) -> object:
        result = request.infer({0: x.float().contiguous().numpy()})
        outs = tuple(torch.from_numpy(np.array(result[o])) for o in outputs)  # copies: buffers are reused
        return outs if len(outs) > 1 else outs[0]

    settled = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()  # e.g. "<Type: 'float32'>"
    return run, "bf16" if "bf16" in settled else "fp16" if "16" in settled else "fp32"


def tile_fn(spec: ModelSpec, variant: Variant, model: torch.nn.Module, files: dict[str, Path],
            threads: int) -> tuple[Callable[[torch.Tensor], object], str]:
    """The tile function of ``variant`` and the precision it computes in.

    The U-Net has one output, so it goes through ``shared.runtimes`` as the package's own backends will;
    ABPN's two outputs (and OpenVINO with no precision hint) need sessions of their own here."""
    from shared import runtimes

    single = spec.kind == "deblur"
    if variant.backend.startswith("torch"):
        compile = variant.backend == "torch.compile"
        if single:
            return runtimes.torch_runtime(model, variant.precision, compile=compile), variant.precision
        return torch_tile_fn(model, variant.precision, compile), variant.precision
    if variant.backend == "onnxruntime":
        path = files[f"onnx_{variant.precision}"]
        if single:
            return runtimes.open_runtime(path, "onnxruntime", variant.precision, threads), variant.precision
        return ort_tile_fn(path, threads), variant.precision
    path = files["ov_int8" if variant.precision == "int8" else "ov_fp32"]
    if single and variant.precision != "default":
        return runtimes.open_runtime(path, "openvino", variant.precision, threads), variant.precision
    hint = {"fp32": "f32", "int8": None, "default": None}[variant.precision]
    fn, settled = ov_tile_fn(path, threads, hint)
    return fn, "int8" if variant.precision == "int8" else settled


# ----------------------------------------------------------------------------------------------- one variant
def measure(spec: ModelSpec, variant_name: str, tiling: Tiling, checkpoint: str, work: str, threads: int,
            repeats: int, eval_pairs: list[tuple[str, str]], max_seconds: float) -> dict:
    """Load, warm up, time, evaluate one variant; the benchmark output is left in ``work`` for the parent."""
    from shared.metrics import psnr
    from shared.tiling import tile_positions, tile_tensor, tiled_forward

    torch.set_num_threads(threads)
    variant = VARIANTS[variant_name]
    start = time.perf_counter()
    model = load(spec, checkpoint)
    is_torch = variant.backend.startswith("torch")
    channels_last = spec.channels_last and is_torch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fn, computes_in = tile_fn(spec, variant, model, files_of(Path(work)), threads)
    load_s = time.perf_counter() - start

    def forward(x: torch.Tensor) -> torch.Tensor:
        if tiling.tile is None:
            with torch.inference_mode():
                out = fn(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        else:
            out = tiled_forward(fn, x, tiling.tile, tiling.overlap, batch_size=tiling.batch, mode="linear",
                                channels_last=channels_last)
        return to_unit(spec.kind, out[0] if isinstance(out, tuple) else out)

    def too_slow(*_: object) -> None:
        raise TimeoutError(f"warm-up still running after the {max_seconds:.0f}-s limit")

    signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(math.ceil(max_seconds))  # the warm-up of such a path alone can take that long
    x = to_model_input(spec.kind, np.load(Path(work) / "input.npy"))
    n_tiles = 1 if tiling.tile is None else len(tile_positions(spec.height, spec.width, tiling.tile, tiling.overlap))
    start = time.perf_counter()
    if tiling.tile is None:
        forward(x)
        warmup_s = estimate = time.perf_counter() - start
    else:
        # Batches made as tiled_forward makes them: outside inference mode (a compiled graph's guards
        # tell inference tensors from normal ones and would compile again in the timed run).
        tiles, _ = tile_tensor(x, tiling.tile, tiling.overlap)
        sizes = sorted({min(tiling.batch, n_tiles), n_tiles % tiling.batch} - {0}, reverse=True)
        batches = [tiles[:size].contiguous(memory_format=torch.channels_last) if channels_last else tiles[:size].clone()
                   for size in sizes]
        del tiles
        for batch in batches:
            fn(batch)
        warmup_s = time.perf_counter() - start
        # A path far slower than the rest (bf16 without bf16 units, say) would hold the benchmark for
        # hours: one more batch gives the full run's time, and a run estimated past the limit is not made.
        start = time.perf_counter()
        fn(batches[0])
        estimate = (time.perf_counter() - start) * math.ceil(n_tiles / tiling.batch)
        del batches
    signal.alarm(0)
    common = {"variant": variant_name, "backend": variant.backend, "precision": variant.precision,
              "computes_in": computes_in, "tiling": tiling.label, "tiles": n_tiles, "load_s": round(load_s, 2),
              "warmup_s": round(warmup_s, 2), "estimate_s": round(estimate, 2)}
    if estimate > max_seconds:
        return {**common, "skipped": f"estimated {estimate:.0f} s from one batch, over the {max_seconds:.0f}-s limit"}

    result: dict = {}
    seconds = median_seconds(lambda: result.__setitem__("out", forward(x)), repeats, warmup=0)
    out_path = Path(work) / f"out_{variant_name}_{tiling.label.replace('/', '-')}.npy"
    np.save(out_path, result.pop("out")[0].numpy())

    scores = []
    for source, target in eval_pairs:
        pred = forward(to_model_input(spec.kind, read_rgb(Path(source))))
        truth = torch.from_numpy(read_rgb(Path(target))).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
        scores.append(float(psnr(pred, truth, data_range=1.0).mean()))
    return {**common, "seconds": seconds, "runs": repeats, "output": str(out_path),
            "eval_psnr": scores, "eval_psnr_mean": statistics.fmean(scores) if scores else None}


# ----------------------------------------------------------------------------------------------- floor
def _rate(fn: Callable[[], object], flop: float, budget: float) -> tuple[float, float]:
    """GFLOP/s of ``fn`` (best of repeats within ``budget`` seconds after one warm call) and one call's time."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    best, spent = first, first
    for _ in range(5):
        if spent > budget:
            break
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return flop / best / 1e9, first


def _sweep(make: Callable[[int], Callable[[], object]], sizes: list[int], budget: float) -> dict:
    """The best rate over growing square sizes, stopping once one product takes longer than ``budget``."""
    rates = {}
    for n in sizes:
        rates[n], first = _rate(make(n), 2.0 * n**3, budget)
        if first > budget:
            break
    best = max(rates, key=rates.get)
    return {"gflops": round(rates[best], 2), "size": best, "rates": {str(k): round(v, 2) for k, v in rates.items()}}


def _ort_int8_gemm(n: int, threads: int) -> Callable[[], object]:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    b = rng.integers(-127, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        [onnx.numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # the newest onnx writes an IR version onnxruntime may not read yet
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {"a": a})


def measure_peaks(threads: int, quick: bool) -> dict:
    """Peak matrix-product throughput per precision on this machine (GFLOP/s)."""
    torch.set_num_threads(threads)
    budget = 0.3 if quick else 2.0
    big = [1024, 2048] if quick else [2048, 4096]
    small = [256, 512, 1024, 2048, 4096]

    def torch_mm(dtype: torch.dtype) -> Callable[[int], Callable[[], object]]:
        def make(n: int) -> Callable[[], object]:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            return lambda: torch.mm(a, b)
        return make

    def int_mm(n: int) -> Callable[[], object]:
        a = torch.randint(-127, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-127, 128, (n, n), dtype=torch.int8)
        return lambda: torch._int_mm(a, b)

    peaks = {"fp32": {**_sweep(torch_mm(torch.float32), big, 1e9), "how": "torch.mm fp32"},
             "bf16": {**_sweep(torch_mm(torch.bfloat16), small, budget), "how": "torch.mm bf16"}}
    int8 = {}
    try:
        int8["torch._int_mm"] = _sweep(lambda n: int_mm(n), small, budget)
    except RuntimeError as exc:
        int8["torch._int_mm"] = {"error": str(exc).splitlines()[0]}
    int8["onnxruntime MatMulInteger"] = _sweep(lambda n: _ort_int8_gemm(n, threads), [512, 1024, 2048], budget)
    fastest = max((k for k in int8 if "gflops" in int8[k]), key=lambda k: int8[k]["gflops"])
    peaks["int8"] = {**int8[fastest], "how": f"{fastest} (u8×s8→s32)", "candidates": int8}
    return peaks


# ----------------------------------------------------------------------------------------------- parent
def psnr_vs(reference: str, other: str) -> float:
    """PSNR (dB, 0..1 range) between two saved outputs, in row chunks: only the files' pages stay resident."""
    a, b = np.load(reference, mmap_mode="r"), np.load(other, mmap_mode="r")
    if a.shape != b.shape:
        raise ValueError(f"{other}: shape {b.shape} differs from the reference {a.shape}")
    total, step = 0.0, 256
    for row in range(0, a.shape[1], step):
        d = a[:, row : row + step].astype(np.float64) - b[:, row : row + step]
        total += float(np.square(d).sum())
    mse = total / a.size
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def forked(fn: Callable[..., dict], *args: object) -> dict:
    """``run_forked`` that turns a failure into an ``error`` entry, so one broken runtime ends nothing else."""
    try:
        return run_forked(fn, *args)
    except RuntimeError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return {"error": lines[-1][:300] if lines else "failed"}


def log(message: str) -> None:
    print(f"  deploy {message}", file=sys.stderr, flush=True)


def run_model(spec: ModelSpec, args: argparse.Namespace, peaks: dict) -> dict:
    checkpoint = getattr(args, spec.key)
    if not Path(checkpoint).is_file():
        raise SystemExit(f"error: {checkpoint}: checkpoint not found (pass --{spec.key})")
    work = args.out / "work" / spec.key
    work.mkdir(parents=True, exist_ok=True)
    sides = split_pairs(args.data, spec.kind)
    held_out = [read_rgb(p) for p, _ in sides["eval"]]
    rows, cols, how = grid_for(spec, held_out)
    np.save(work / "input.npy", mosaic(held_out, spec.height, spec.width, rows, cols))
    del held_out
    # Calibration: crops of the training photos; ABPN's tiles are larger than those photos, so its crops
    # come from a mosaic of the training photos built like the benchmark input.
    train = [read_rgb(p) for p, _ in sides["train"]]
    if spec.kind == "abpn":
        train = [mosaic(train, spec.height, spec.width, rows, cols)]
    np.save(work / "calibration.npy", np.stack(train))
    del train
    count = 4 if args.quick else 16
    eval_pairs = [(str(p), str(t)) for p, t in sides["eval"]][: 1 if args.quick else None]

    wanted = [REFERENCE] + [v for v in args.variants if v != REFERENCE]
    start = time.perf_counter()
    prep = forked(prepare, spec, checkpoint, str(work), str(work / "calibration.npy"), count, args.threads, wanted)
    log(f"{spec.key}: exports and FLOP count {time.perf_counter() - start:.1f} s {prep.get('error', '')}")
    if "error" in prep:
        raise SystemExit(f"error: {spec.key}: preparing the exported models failed: {prep['error']}")

    results: list[dict] = []

    def run_variant(name: str, tiling: Tiling, label: str) -> dict:
        start = time.perf_counter()
        r = forked(measure, spec, name, tiling, checkpoint, str(work), args.threads, args.repeat, eval_pairs,
                   args.max_minutes * 60)
        r.update(label=label, variant=name, tiling=tiling.label)
        r.setdefault("backend", VARIANTS[name].backend)
        r.setdefault("precision", VARIANTS[name].precision)
        results.append(r)
        said = r.get("error") or r.get("skipped") or f"{r['seconds']:.2f} s, {r['peak_mb']:.0f} MiB"
        log(f"{spec.key} {label}: {said} ({time.perf_counter() - start:.1f} s)")
        return r

    for name in wanted:
        run_variant(name, spec.tiling, name)
    if spec.kind == "deblur" and args.retilings:
        base = args.retile or fastest_keeping_quality(results)
        for key in args.retilings:
            run_variant(base, RETILINGS[key], f"{base} @ {key}")

    reference = next(r for r in results if r["label"] == REFERENCE)
    ref_eval = reference.get("eval_psnr_mean")
    tile_flops = prep["tile_flops"]
    for r in results:
        if "seconds" not in r:
            continue
        tiling = spec.tiling if r["label"] == r["variant"] else RETILINGS[r["label"].split(" @ ")[1]]
        flops = prep["image_flops"] if tiling.tile is None else tile_flops * r["tiles"]
        peak_key = r["computes_in"] if r["computes_in"] in peaks else "fp32"
        r["flops"] = flops
        r["floor_s"] = flops / (peaks[peak_key]["gflops"] * 1e9)
        r["x_floor"] = r["seconds"] / r["floor_s"]
        r["x_eager"] = r["seconds"] / reference["seconds"] if "seconds" in reference else None
        r["psnr_vs_fp32"] = psnr_vs(reference["output"], r["output"]) if r is not reference and "output" in reference else None
        r["delta_eval_psnr"] = (r["eval_psnr_mean"] - ref_eval) if ref_eval is not None and r["eval_psnr_mean"] is not None else None
    for r in results:
        if "output" in r:
            Path(r.pop("output")).unlink(missing_ok=True)
    return {"model": spec.key, "checkpoint": checkpoint, "size": f"{spec.width}×{spec.height}",
            "input": how, "tiling": spec.tiling.label, "tile_flops": tile_flops, "image_flops": prep["image_flops"],
            "export_s": prep["export_s"], "calibration_crops": prep["calibration_crops"],
            "eval_pairs": [Path(p).name for p, _ in eval_pairs], "variants": results}


def fastest_keeping_quality(results: list[dict]) -> str:
    """The fastest measured variant whose held-out PSNR stays within the quality rule of fp32 eager."""
    reference = next(r for r in results if r["label"] == REFERENCE)
    ok = [r for r in results if "seconds" in r and (
        r["eval_psnr_mean"] is None or reference.get("eval_psnr_mean") is None
        or r["eval_psnr_mean"] >= reference["eval_psnr_mean"] - QUALITY_RULE_DB)]
    return min(ok, key=lambda r: r["seconds"])["variant"] if ok else REFERENCE


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for name in ("onnxruntime", "onnx", "openvino", "nncf", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞ (identical)"
    return format(value, fmt)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = ["# CPU deployment benchmark", "",
             f"{env['date']} · {env['cpu']} · {env['cores']} cores · {env['threads']} threads · "
             + " · ".join(f"{k} {v}" for k, v in env["versions"].items())
             + (" · **--quick: smoke-test sizes, not a measurement**" if report["quick"] else ""), "",
             "Peak of a large matrix product on this machine (the floor's denominator):", "",
             "| precision | GFLOP/s | n | measured with |", "| --- | --- | --- | --- |"]
    for precision, peak in report["peaks"].items():
        lines.append(f"| {precision} | {peak['gflops']:.1f} | {peak['size']} | {peak['how']} |")
    int8 = report["peaks"]["int8"]["candidates"]
    lines += ["", "int8 candidates: " + "; ".join(
        f"{k} {v['gflops']:.1f} GFLOP/s" if "gflops" in v else f"{k}: {v['error']}" for k, v in int8.items()), ""]
    for model in report["models"]:
        lines += [f"## {model['model']} ({model['size']}, tiles {model['tiling']})", "",
                  f"Input: {model['input']}. Checkpoint `{Path(model['checkpoint']).name}` (trained). "
                  f"Held-out pairs for the ΔPSNR: {', '.join(model['eval_pairs'])} at their own size, same tiling. "
                  f"int8 calibration: {model['calibration_crops']} crops of the training-split photos. "
                  f"FLOPs of one tile: {model['tile_flops'] / 1e9:.1f} G.", "",
                  "| variant | backend | precision | time s | × fp32 eager | × floor | peak RSS MiB | "
                  "PSNR vs fp32 (dB) | ΔPSNR vs sharp (dB) |" if model["model"] != "abpn" else
                  "| variant | backend | precision | time s | × fp32 eager | × floor | peak RSS MiB | "
                  "PSNR vs fp32 (dB) | ΔPSNR vs retouched (dB) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in model["variants"]:
            precision = r["precision"] if r.get("computes_in", r["precision"]) == r["precision"] else \
                f"{r['precision']} (→ {r['computes_in']})"
            label = r["label"] + ("" if r["tiling"] in (model["tiling"], "untiled") else f" (tiles {r['tiling']})")
            if "error" in r:
                lines.append(f"| {label} | {r['backend']} | {precision} | failed: {r['error']} | | | | | |")
                continue
            if "skipped" in r:
                lines.append(f"| {label} | {r['backend']} | {precision} | not run: {r['skipped']} | | | "
                             f"{r['peak_mb']:.0f} | | |")
                continue
            lines.append(f"| {label} | {r['backend']} | {precision} | {r['seconds']:.2f} | {_num(r['x_eager'], '.2f')} | "
                         f"{r['x_floor']:.1f} | {r['peak_mb']:.0f} | {_num(r['psnr_vs_fp32'], '.1f')} | "
                         f"{_num(r['delta_eval_psnr'], '+.3f')} |")
        ref = next((r for r in model["variants"] if r["label"] == REFERENCE and "eval_psnr_mean" in r), None)
        lines += ["", "Setup (not in the times above): " + "; ".join(
            f"{r['label']} load {r['load_s']:.1f} s + warm-up {r['warmup_s']:.1f} s"
            for r in model["variants"] if "load_s" in r)
            + ". Export: " + ", ".join(f"{k} {v:.1f} s" for k, v in model["export_s"].items()) + ".", ""]
        if ref is not None:
            lines += [f"fp32 eager held-out PSNR: {ref['eval_psnr_mean']:.3f} dB.", ""]
    lines += ["Times are the median of the timed runs after a warm-up; the floor is the FLOPs of the tiled "
              "work (convolutions and matrix products, one tile × tiles) over the peak above in the precision "
              "the variant computes in (× floor below 1: that precision's matrix product is slower here than "
              "its convolutions). Peak RSS is the whole forked process's, shared imports included. "
              "PSNR vs fp32 compares "
              "each output with the fp32 eager output on the benchmark input (0..1 range); ΔPSNR is the "
              "held-out PSNR minus fp32 eager's.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="deblur,abpn", help="comma list of deblur32, deblur8, deblur (both), abpn")
    parser.add_argument("--only", default=None, help="comma list of variants (and tile704, untiled)")
    parser.add_argument("--retile", default=None, choices=list(VARIANTS), help="variant for tile704/untiled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per variant (median)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop a variant whose warm-up, or whose time estimated from one tile batch, exceeds this "
                             "(default 15; 1 with --quick)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding deblur/ and retouch/")
    for key, what in CHECKPOINTS.items():
        parser.add_argument(f"--{key}", default=None, help=f"trained checkpoint of the {what}")
    args = parser.parse_args(argv)
    keys = []
    for item in args.models.split(","):
        item = item.strip()
        expanded = ["deblur32", "deblur8"] if item == "deblur" else [item]
        for key in expanded:
            if key not in MODELS:
                parser.error(f"--models: unknown model {item!r} (deblur32, deblur8, deblur, abpn)")
            if key not in keys:
                keys.append(key)
    args.model_keys = keys
    for key in keys:
        path = getattr(args, key)
        if path is None or not Path(path).is_file():
            parser.error(f"--{key}: a trained checkpoint is needed for model {key} ({path or 'not given'})")
    only = [v.strip() for v in args.only.split(",")] if args.only else list(VARIANTS) + list(RETILINGS)
    if args.quick and not args.only:
        # Compiling takes minutes whatever the input size: a smoke test names them with --only.
        only = [v for v in only if VARIANTS.get(v, VARIANTS[REFERENCE]).backend != "torch.compile"]
    unknown = [v for v in only if v not in VARIANTS and v not in RETILINGS]
    if unknown:
        parser.error(f"--only: unknown variant(s) {', '.join(unknown)} (one of {', '.join([*VARIANTS, *RETILINGS])})")
    args.variants = [v for v in only if v in VARIANTS]
    args.retilings = [v for v in only if v in RETILINGS]
    if args.max_minutes is None:
        args.max_minutes = 1.0 if args.quick else 15.0
    if args.threads < 1 or args.repeat < 1:
        parser.error("--threads and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Imports only: the forked children share them, and no OpenMP pool exists yet to break in a fork.
    for module in ("deblur_unet.inference", "abpn_retouch.infer", "shared.runtimes", "shared.tiling",
                   "shared.metrics", "torch.utils.flop_counter", "torch._dynamo"):
        importlib.import_module(module)
    specs = QUICK if args.quick else MODELS
    start = time.perf_counter()
    peaks = forked(measure_peaks, args.threads, args.quick)
    if "error" in peaks:
        raise SystemExit(f"error: measuring the matrix-product peaks failed: {peaks['error']}")
    peaks.pop("peak_mb", None)
    log("peaks " + ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s" for k, v in peaks.items())
        + f" ({time.perf_counter() - start:.1f} s)")
    report = {
        "environment": {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                        "versions": versions()},
        "quick": args.quick, "repeat": args.repeat, "peaks": peaks, "models": []}
    for key in args.model_keys:
        spec = specs[key]
        report["models"].append(run_model(spec, args, peaks))
        (args.out / "deploy.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "deploy.md").write_text(markdown(report))
    (args.out / "deploy.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "deploy.md").write_text(markdown(report))
    log(f"wrote {args.out / 'deploy.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a benchmark's failure is best read with its traceback
        traceback.print_exc()
        sys.exit(1)
