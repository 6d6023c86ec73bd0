"""CPU serving runtimes for image models: export, int8 calibration, and one callable per runtime.

A model served by :func:`shared.tiling.tiled_forward` is a function ``(b, C, t, t) -> (b, C', t·s, t·s)``.
This module makes that function from a PyTorch module or from an exported file, for three runtimes:

* ``torch``: the module itself, eager, optionally under bf16 autocast (:func:`torch_runtime`).
* ``onnxruntime``: an ONNX file (:func:`export_onnx`; int8 by static QDQ quantisation calibrated on real
  inputs, :func:`quantize_onnx_int8`).
* ``openvino``: an OpenVINO IR (``.xml`` + ``.bin``, :func:`export_openvino`; int8 through NNCF's
  post-training quantisation, same calibration inputs), or an ONNX file read by OpenVINO.

:func:`open_runtime` runs an exported file; :func:`module_runtime` converts a module in memory (float
precisions only: int8 needs calibration, hence a file).

A file's precision is read from its graph (:func:`file_precision`), so an int8 file is never run as if it
were fp32 and a float file never claims int8. Optional dependencies: ``shared[onnx]`` (onnx,
onnxruntime) and ``shared[openvino]`` (openvino, nncf); importing this module needs neither.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from shared.errors import ConfigError

Backend = Literal["torch", "onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
ONNX_OPSET = 18
INPUT_NAME = "input"


@functools.cache
def _core() -> Any:
    """One OpenVINO ``Core`` per process: it holds the loaded CPU plugin, whose start is the slow part."""
    return _require("openvino", "openvino").Core()


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"this needs {module}: install the extra, e.g. `uv sync --extra {extra}`") from None


def _onnx_export(model: torch.nn.Module, target: str | io.BytesIO, example: torch.Tensor, opset: int) -> None:
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; the file is checked when opened
        torch.onnx.export(model, (example.cpu().float(),), target, input_names=[INPUT_NAME], output_names=["output"],
                          dynamic_axes={INPUT_NAME: dynamic, "output": dynamic}, opset_version=opset, dynamo=False)


def export_onnx(model: torch.nn.Module, path: str | Path, example: torch.Tensor, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX with one input ``input`` whose batch, height and width are dynamic.

    The TorchScript exporter is used: it records size-dependent ops (a U-Net's skip alignment) as shape
    ops, so one file serves every tile size. The file appears only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    _onnx_export(model, str(tmp), example, opset)
    tmp.replace(path)
    return path


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int = ONNX_OPSET) -> bytes:
    """The ONNX file :func:`export_onnx` would write, in memory (for a runtime built without a file)."""
    buffer = io.BytesIO()
    _onnx_export(model, buffer, example, opset)
    return buffer.getvalue()


def calibration_batches(images: Iterable[torch.Tensor], tile_size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random ``(1, C, t, t)`` float32 crops from model-ready images ``(C, H, W)`` or ``(1, C, H, W)``.

    Crops, not whole images: the quantiser sees inputs of the size the tiles will have, and a few dozen
    crops from several photos cover their range better than a few whole frames.
    """
    pool = [im if im.dim() == 4 else im.unsqueeze(0) for im in images]
    if not pool:
        raise ConfigError("int8 calibration needs at least one image")
    rng = random.Random(seed)
    batches = []
    for i in range(count):
        im = pool[i % len(pool)]
        h, w = im.shape[-2:]
        if h < tile_size or w < tile_size:
            raise ConfigError(f"calibration image of {w}×{h} is smaller than the {tile_size}-px tile")
        top, left = rng.randint(0, h - tile_size), rng.randint(0, w - tile_size)
        batches.append(im[..., top : top + tile_size, left : left + tile_size].float().contiguous().numpy())
    return batches


QUANTIZED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def quantize_onnx_int8(source: str | Path, path: str | Path, batches: Sequence[np.ndarray]) -> Path:
    """Static int8 quantisation of an ONNX file: QDQ, uint8 activations, per-channel int8 weights.

    Activation ranges come from running ``batches`` (from :func:`calibration_batches`) through the model.
    Only the compute layers (:data:`QUANTIZED_OPS`) are quantised, and the first and last of them stay
    float: on a trained residual deblurring U-Net (base 8, real GoPro frames, tiles 128) quantising every
    op, or every compute layer, put the output 35.8 dB from fp32, farther than the blurry input itself
    (38.3 dB); with the norms, additions and the two end layers in float it was 55.2 dB.
    """
    onnx = _require("onnx", "onnx")
    _require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{INPUT_NAME: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    compute = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node
               if node.op_type in QUANTIZED_OPS]
    ends = [compute[0], compute[-1]] if len(compute) > 2 else []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # The quantiser logs one root-logger warning per normalisation layer (its bias is computed, not
    # stored) and advice to pre-process; neither changes the result, and they bury the command's output.
    with _quiet_logger():
        quantize_static(str(source), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=ends)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def _quiet_logger(name: str | None = None):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def openvino_model(model: torch.nn.Module | str | Path | bytes, example: torch.Tensor | None = None,
                   batches: Sequence[np.ndarray] | None = None) -> Any:
    """An in-memory OpenVINO model (``openvino.Model``) from a module, an ONNX file or ONNX bytes.

    A module goes through the ONNX exporter rather than OpenVINO's own PyTorch frontend: that frontend
    traces Python branches on tensor sizes at the example's size (a U-Net's skip alignment then fails on
    any other size), and took 10–15 s per conversion here against 2–3 s through ONNX. ONNX is read by
    ``Core.read_model`` (0.3 s for a small net here, where ``convert_model`` took 4–5 s).
    With ``batches`` the model is int8: NNCF's post-training quantisation, activation ranges from ``batches``.
    Height and width stay dynamic.
    """
    if isinstance(model, torch.nn.Module):
        if example is None:
            raise ValueError("openvino_model needs an example input to export a module")
        model = onnx_bytes(model, example)
    ir = _core().read_model(model if isinstance(model, bytes) else str(model))
    if batches is not None:
        nncf = _require("nncf", "openvino")
        # As in quantize_onnx_int8: compute layers only, the first and last in float. NNCF's defaults
        # (which also quantise the normalisations and additions) put a trained residual U-Net's output
        # 25.4 dB from fp32, far worse than its blurry input (38.3 dB); this scope gave 58.6 dB.
        compute = [op.get_friendly_name() for op in ir.get_ordered_ops() if op.get_type_name() in _OV_COMPUTE]
        others = sorted({op.get_type_name() for op in ir.get_ops()} - set(_OV_COMPUTE))
        scope = nncf.IgnoredScope(names=[compute[0], compute[-1]] if len(compute) > 2 else [], types=others,
                                  validate=False)
        with _quiet_logger("nncf"):  # one INFO line per op left in float
            ir = nncf.quantize(ir, nncf.Dataset(list(batches)), subset_size=len(batches), ignored_scope=scope)
    return ir


_OV_COMPUTE = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def export_openvino(model: torch.nn.Module | str | Path, path: str | Path, example: torch.Tensor | None = None,
                    batches: Sequence[np.ndarray] | None = None) -> Path:
    """Write an OpenVINO IR (``path`` ``.xml`` and its ``.bin``) from a module or an ONNX file.

    With ``batches`` the IR is int8 (see :func:`openvino_model`). Weights stay fp32 in a float IR.
    """
    ov = _require("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"{path}: an OpenVINO model is written as a .xml file (with its .bin beside it)")
    ir = openvino_model(model, example, batches)
    path.parent.mkdir(parents=True, exist_ok=True)
    # save_model halves float weights to fp16 unless told otherwise: 2e-3 off PyTorch on a small U-Net.
    ov.save_model(ir, str(path), compress_to_fp16=False)
    return path


def file_precision(path: str | Path) -> str:
    """``int8`` if the ONNX/OpenVINO file holds quantised ops, else ``fp32``."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = _require("onnx", "onnx")
        try:
            ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        except Exception as exc:  # noqa: BLE001 - protobuf's decode errors have no common public base
            raise ConfigError(f"{path}: not a readable ONNX model: {_first_line(exc)}") from None
        return "int8" if ops & {"QuantizeLinear", "QLinearConv", "ConvInteger"} else "fp32"
    if path.suffix == ".xml":
        try:
            ops = {op.get_type_name() for op in _core().read_model(str(path)).get_ops()}
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
            raise ConfigError(f"{path}: not a readable OpenVINO model (the .bin must sit beside it): "
                              f"{_first_line(exc)}") from None
        return "int8" if ops & {"FakeQuantize", "FakeConvert"} else "fp32"
    raise ConfigError(f"{path}: not a model file this runtime reads (.onnx or .xml)")


def _check_file(path: Path, backend: str, precision: str) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found")
    allowed = {"onnxruntime": (".onnx",), "openvino": (".onnx", ".xml")}[backend]
    if path.suffix not in allowed:
        raise ConfigError(f"{path}: {backend} runs {' or '.join(allowed)} files")
    stored = file_precision(path)
    if (precision == "int8") != (stored == "int8"):
        hint = "export it with --precision int8 (calibrated)" if precision == "int8" else "pass --precision int8"
        raise ConfigError(f"{path}: the file is {stored}, not {precision}: {hint}")


def compile_module(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` with inductor and freezing (weights become constants: norms fold, conv weights
    are pre-packed); the first call per input shape compiles (minutes on a small CPU), later calls reuse it.
    Freezing is passed as this compilation's option, so other compiled modules keep the global setting."""
    return torch.compile(model.eval(), dynamic=False, options={"freezing": True})


def torch_runtime(model: torch.nn.Module, precision: str = "fp32", compile: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module as a tile function; bf16 runs under autocast; ``compile`` uses inductor with freezing."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision} is not a PyTorch CPU path: int8 runs through onnxruntime or openvino")
    model.eval()
    fn: Callable[[torch.Tensor], torch.Tensor] = compile_module(model) if compile else model
    dtype = torch.bfloat16 if precision == "bf16" else None

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return fn(x).float()

    return run


def _ort_session(source: str | bytes, name: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    ort = _require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads spinning between calls only take CPU from the rest of a shared host; latency barely moves.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ConfigError(f"{name}: onnxruntime cannot load it: {_first_line(exc)}") from None
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.detach().cpu().float().contiguous().numpy()})[0])

    return run


def _ov_compile(model: Any, name: str, precision: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision in ("fp32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = "f32" if precision == "fp32" else "bf16"
    core = _core()
    try:
        compiled = core.compile_model(core.read_model(model) if isinstance(model, str) else model, "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
        raise ConfigError(f"{name}: OpenVINO cannot load it: {_first_line(exc)}") from None
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(x: torch.Tensor) -> torch.Tensor:
        result = request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(np.array(result[output]))  # a copy: the request reuses its output buffer

    return run


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def onnxruntime_runtime(path: str | Path, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX file under ONNX Runtime's CPU provider as a tile function (``threads`` 0 = its default)."""
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"onnxruntime has no {precision} CPU path: use --precision fp32 or int8")
    path = Path(path)
    _check_file(path, "onnxruntime", precision)
    return _ort_session(str(path), str(path), threads)


def openvino_runtime(path: str | Path, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An OpenVINO IR or ONNX file compiled for the CPU as a tile function.

    ``fp32`` pins OpenVINO's inference precision to f32 (on CPUs with bf16 units it would otherwise pick
    bf16 by itself); ``bf16`` asks for bf16 (OpenVINO falls back to f32 where the CPU has none);
    ``int8`` needs a quantised file and runs its int8 ops.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"openvino has no {precision} path: use --precision fp32, bf16 or int8")
    path = Path(path)
    _check_file(path, "openvino", precision)
    return _ov_compile(str(path), str(path), precision, threads)


def open_runtime(path: str | Path, backend: str, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tile function for an exported file under ``backend`` (``onnxruntime`` or ``openvino``)."""
    if backend == "onnxruntime":
        return onnxruntime_runtime(path, precision, threads)
    if backend == "openvino":
        return openvino_runtime(path, precision, threads)
    raise ConfigError(f"--backend {backend} does not run exported files: choose onnxruntime or openvino")


def module_runtime(model: torch.nn.Module, backend: str, precision: str = "fp32", example: torch.Tensor | None = None,
                   threads: int = 0, name: str = "model") -> Callable[[torch.Tensor], torch.Tensor]:
    """A module converted in memory and run by ``backend``, with no file written.

    ``onnxruntime`` runs fp32 (ONNX bytes from :func:`onnx_bytes`); ``openvino`` fp32 or bf16. int8 needs
    activation ranges from calibration, so it is refused here: export a calibrated file instead. ``example``
    is one input the exporter traces (its batch, height and width stay dynamic; default ``(1, 3, 64, 64)``);
    ``name`` is what error messages call the model (its checkpoint, say).
    """
    if backend not in ("onnxruntime", "openvino"):
        raise ConfigError(f"--backend {backend} does not convert modules: choose onnxruntime or openvino")
    if precision == "int8":
        raise ConfigError(f"{name}: --precision int8 needs an exported, calibrated model file: export one with "
                          "--precision int8 and a calibration folder, then run it with --model")
    if backend == "onnxruntime" and precision != "fp32":
        raise ConfigError(f"onnxruntime has no {precision} CPU path: use --precision fp32 or int8")
    if backend == "openvino" and precision not in ("fp32", "bf16"):
        raise ConfigError(f"openvino has no {precision} path: use --precision fp32, bf16 or int8")
    example = torch.zeros(1, 3, 64, 64) if example is None else example
    if backend == "onnxruntime":
        _require("onnxruntime", "onnx")
        return _ort_session(onnx_bytes(model, example), name, threads)
    return _ov_compile(openvino_model(model, example), name, precision, threads)
