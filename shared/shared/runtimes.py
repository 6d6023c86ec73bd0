"""CPU serving runtimes for image models: export, int8 calibration, and one callable per runtime.

A model served by :func:`shared.tiling.tiled_forward` is a function ``(b, C, t, t) -> (b, C', t·s, t·s)``.
This module makes that function from a PyTorch module or from an exported file, for three runtimes:

* ``torch``: the module itself, eager, optionally under bf16 autocast (:func:`torch_runtime`).
* ``onnxruntime``: an ONNX file (:func:`export_onnx`; int8 by static QDQ quantisation calibrated on real
  inputs, :func:`quantize_onnx_int8`).
* ``openvino``: an OpenVINO IR (``.xml`` + ``.bin``, :func:`export_openvino`; int8 through NNCF's
  post-training quantisation, same calibration inputs), or an ONNX file read by OpenVINO.

A file's precision is read from its graph (:func:`file_precision`), so an int8 file is never run as if it
were fp32 and a float file never claims int8. Optional dependencies: ``shared[onnx]`` (onnx,
onnxruntime) and ``shared[openvino]`` (openvino, nncf); importing this module needs neither.
"""

from __future__ import annotations

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


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"this needs {module}: install the extra, e.g. `uv sync --extra {extra}`") from None


def export_onnx(model: torch.nn.Module, path: str | Path, example: torch.Tensor, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX with one input ``input`` whose batch, height and width are dynamic.

    The TorchScript exporter is used: it records size-dependent ops (a U-Net's skip alignment) as shape
    ops, so one file serves every tile size. The file appears only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; the file is checked when opened
        torch.onnx.export(model, (example.cpu().float(),), str(tmp), input_names=[INPUT_NAME], output_names=["output"],
                          dynamic_axes={INPUT_NAME: dynamic, "output": dynamic}, opset_version=opset, dynamo=False)
    tmp.replace(path)
    return path


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


def quantize_onnx_int8(source: str | Path, path: str | Path, batches: Sequence[np.ndarray]) -> Path:
    """Static int8 quantisation of an ONNX file: QDQ, uint8 activations, per-channel int8 weights.

    Activation ranges come from running ``batches`` (from :func:`calibration_batches`) through the model.
    """
    _require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{INPUT_NAME: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    quantize_static(str(source), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    tmp.replace(path)
    return path


def export_openvino(model: torch.nn.Module | str | Path, path: str | Path, example: torch.Tensor | None = None,
                    batches: Sequence[np.ndarray] | None = None) -> Path:
    """Write an OpenVINO IR (``path`` ``.xml`` and its ``.bin``) from a module or an ONNX file.

    With ``batches`` the IR is int8: NNCF's post-training quantisation, activation ranges from ``batches``.
    Height and width stay dynamic.
    """
    ov = _require("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"{path}: an OpenVINO model is written as a .xml file (with its .bin beside it)")
    if isinstance(model, torch.nn.Module):
        if example is None:
            raise ValueError("export_openvino needs an example input to trace a module")
        model = model.cpu().eval().to(memory_format=torch.contiguous_format)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ir = ov.convert_model(model, example_input=example.cpu().float(),
                                  input=[ov.PartialShape([-1, example.shape[1], -1, -1])])
    else:
        ir = ov.convert_model(str(model))
    if batches is not None:
        nncf = _require("nncf", "openvino")
        ir = nncf.quantize(ir, nncf.Dataset(list(batches)), subset_size=len(batches))
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ir, str(path))  # weights are compressed to fp16 only when asked; fp32 stays fp32
    return path


def file_precision(path: str | Path) -> str:
    """``int8`` if the ONNX/OpenVINO file holds quantised ops, else ``fp32``."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = _require("onnx", "onnx")
        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        return "int8" if ops & {"QuantizeLinear", "QLinearConv", "ConvInteger"} else "fp32"
    if path.suffix == ".xml":
        ov = _require("openvino", "openvino")
        ops = {op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()}
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


def torch_runtime(model: torch.nn.Module, precision: str = "fp32", compile: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module as a tile function; bf16 runs under autocast; ``compile`` uses inductor with freezing."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision} is not a PyTorch CPU path: int8 runs through onnxruntime or openvino")
    model.eval()
    fn: Callable[[torch.Tensor], torch.Tensor] = model
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: folds norms and pre-packs conv weights
        fn = torch.compile(model, dynamic=False)
    dtype = torch.bfloat16 if precision == "bf16" else None

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return fn(x).float()

    return run


def onnxruntime_runtime(path: str | Path, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX file under ONNX Runtime's CPU provider as a tile function (``threads`` 0 = its default)."""
    if precision == "bf16":
        raise ConfigError("onnxruntime has no bf16 CPU path: use --precision fp32 or int8")
    ort = _require("onnxruntime", "onnx")
    path = Path(path)
    _check_file(path, "onnxruntime", precision)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ConfigError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().contiguous().numpy()})[0])

    return run


def openvino_runtime(path: str | Path, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An OpenVINO IR or ONNX file compiled for the CPU as a tile function.

    ``fp32`` pins OpenVINO's inference precision to f32 (on CPUs with bf16 units it would otherwise pick
    bf16 by itself); ``bf16`` asks for bf16 (OpenVINO falls back to f32 where the CPU has none);
    ``int8`` needs a quantised file and runs its int8 ops.
    """
    ov = _require("openvino", "openvino")
    path = Path(path)
    _check_file(path, "openvino", precision)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision in ("fp32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = "f32" if precision == "fp32" else "bf16"
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
        raise ConfigError(f"{path}: OpenVINO cannot load it: {str(exc).splitlines()[0]}") from None
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        result = request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(np.array(result[compiled.output(0)]))

    return run


def open_runtime(path: str | Path, backend: str, precision: str = "fp32", threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tile function for an exported file under ``backend`` (``onnxruntime`` or ``openvino``)."""
    if backend == "onnxruntime":
        return onnxruntime_runtime(path, precision, threads)
    if backend == "openvino":
        return openvino_runtime(path, precision, threads)
    raise ConfigError(f"--backend {backend} does not run exported files: choose onnxruntime or openvino")
