"""Convert a trained student checkpoint to a Core ML ``.mlpackage`` (``coreml/converter.py``).

The architecture is detected from the checkpoint; the trained SR head is kept; ImageNet normalisation
is part of the graph (inputs are three RGB images, 0..255); MIL constant elimination and dead-code
elimination run in the pass pipeline; weights are FP16 unless ``--no-fp16``; ``--palettization``
clusters weights to 8-bit lookup tables; the minimum deployment target is iOS 17. Converting works on
Linux as well as macOS (only *running* a Core ML model needs macOS).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from neuropbr.coreml.wrapper import INPUT_NAMES, OUTPUT_NAMES, DeployWrapper
from neuropbr.student.factory import load_student
from shared.errors import ConfigError, UserError, cli_entry

REQUIRED_PASSES = ("common::const_elimination", "common::dead_code_elimination")


def import_coremltools():
    """coremltools, or a one-line error saying how to get it (it is the package's ``coreml`` extra)."""
    try:
        import coremltools as ct
    except ImportError:
        raise UserError("coremltools is not installed: install the extra with "
                        "`uv sync --package neuropbr --extra coreml` (or pip install 'neuropbr[coreml]')") from None
    return ct


_patched = False


def patch_scalar_casts(ct) -> None:
    """Make coremltools' ``aten::Int``/``aten::Bool`` conversion work with NumPy >= 2.4.

    coremltools 9.0 folds a constant shape value with ``int(x.val)``; traced graphs give it a
    one-element array there, which NumPy 2.4 no longer converts to a scalar ("only 0-dimensional arrays
    can be converted to Python scalars"). We register the same conversion, taking the single element
    explicitly; behaviour is otherwise unchanged.
    """
    global _patched
    if _patched:
        return
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def cast(context, node, dtype, dtype_name):
        x = _get_inputs(context, node, expected=1)[0]
        if not (len(x.shape) == 0 or all(d == 1 for d in x.shape)):
            raise ValueError("input to cast must be either a scalar or a length 1 tensor")
        if x.can_be_folded_to_const():
            value = x.val
            if isinstance(value, np.ndarray):
                value = value.reshape(-1)[0].item()
            res = mb.const(val=dtype(value), name=node.name)
        elif len(x.shape) > 0:
            res = mb.cast(x=mb.squeeze(x=x, name=node.name + "_item"), dtype=dtype_name, name=node.name)
        else:
            res = mb.cast(x=x, dtype=dtype_name, name=node.name)
        context.add(res, node.name)

    def _int(context, node):
        cast(context, node, int, "int32")

    def _bool(context, node):
        cast(context, node, bool, "bool")

    register_torch_op(_int, torch_alias=["int"], override=True)
    register_torch_op(_bool, torch_alias=["bool"], override=True)
    _patched = True


def pass_pipeline(ct):
    """coremltools' default MIL pipeline, checked to hold constant and dead-code elimination."""
    pipeline = ct.PassPipeline.DEFAULT
    missing = [p for p in REQUIRED_PASSES if p not in pipeline.passes]
    if missing:  # never expected; keeps the documented guarantee honest if coremltools changes
        pipeline = ct.PassPipeline(pass_names=list(pipeline.passes) + missing, pipeline_name="neuropbr")
    return pipeline


def convert(checkpoint: str | os.PathLike, output: str | os.PathLike, fp16: bool = True, palettization: bool = False,
            test_resolution: int | None = None, use_sr: bool = False) -> dict[str, Any]:
    """Convert and save; returns a summary (architecture, sizes, precision, file)."""
    ct = import_coremltools()
    patch_scalar_casts(ct)
    output = Path(output)
    if output.suffix != ".mlpackage":
        raise ConfigError(f"{output}: the output must end in .mlpackage")
    model, cfg = load_student(checkpoint)
    resolution = test_resolution or cfg.data.image_size
    if resolution % 32:
        raise ConfigError(f"--test-resolution must be a multiple of 32 (the encoder's stride), got {resolution}")
    # The default conversion always keeps the SR head; --test-resolution bypasses it unless --use-sr.
    keep_sr = True if test_resolution is None else use_sr
    scale = cfg.model.sr_scale if keep_sr else 1
    wrapper = DeployWrapper(model, cfg, use_sr=keep_sr).eval()
    example = tuple(torch.rand(1, 3, resolution, resolution) for _ in INPUT_NAMES)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    inputs = [ct.ImageType(name=name, shape=(1, 3, resolution, resolution), scale=1.0 / 255.0,
                           color_layout=ct.colorlayout.RGB) for name in INPUT_NAMES]
    outputs = [ct.TensorType(name=name) for name in OUTPUT_NAMES]
    try:
        mlmodel = ct.convert(
            traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
            pass_pipeline=pass_pipeline(ct),
        )
    except Exception as exc:
        raise RuntimeError(f"coremltools {ct.__version__} could not convert the traced student "
                           f"(torch {torch.__version__}): {type(exc).__name__}: {exc}") from exc
    if palettization:
        from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

        config = OptimizationConfig(global_config=OpPalettizerConfig(mode="kmeans", nbits=8, weight_threshold=512))
        mlmodel = palettize_weights(mlmodel, config)
    out_size = resolution * scale
    summary = {
        "architecture": cfg.model.arch, "input_size": resolution, "output_size": out_size,
        "sr_head": bool(keep_sr and cfg.model.sr_scale > 1), "sr_scale": scale,
        "precision": "fp16" if fp16 else "fp32", "palettized": palettization,
        "minimum_deployment_target": "iOS17", "output": str(output),
    }
    mlmodel.author = "NeuroPBR"
    mlmodel.short_description = (f"NeuroPBR student ({cfg.model.arch}): three RGB views {resolution}² → albedo, "
                                 f"roughness, metallic, normal at {out_size}²")
    for name in INPUT_NAMES:
        mlmodel.input_description[name] = "RGB render of the material, 0..255 (normalised inside the model)"
    mlmodel.output_description["albedo"] = "sRGB albedo in [0, 1], (1, 3, S, S)"
    mlmodel.output_description["roughness"] = "roughness in [0, 1], (1, 1, S, S)"
    mlmodel.output_description["metallic"] = "metallic in [0, 1], (1, 1, S, S)"
    mlmodel.output_description["normal"] = "tangent-space unit normal in [-1, 1] (OpenGL +Y), (1, 3, S, S)"
    mlmodel.user_defined_metadata.update({f"neuropbr.{k}": str(v) for k, v in summary.items() if k != "output"})
    mlmodel.user_defined_metadata["neuropbr.config"] = json.dumps(cfg.to_dict())
    output.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(output))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coreml/converter.py", description="Convert a NeuroPBR student checkpoint to Core ML.")
    p.add_argument("checkpoint", help="student checkpoint (best_student.pth, best.pth or latest.pth)")
    p.add_argument("--output", default="pbr_model.mlpackage", help="output .mlpackage (default pbr_model.mlpackage)")
    p.add_argument("--no-fp16", action="store_true", help="keep FP32 weights and compute (if FP16 shows artifacts)")
    p.add_argument("--palettization", action="store_true", help="8-bit k-means weight palettization (smaller file)")
    p.add_argument("--test-resolution", type=int, help="convert at this input size (ANE memory tests); bypasses the SR head")
    p.add_argument("--use-sr", action="store_true", help="with --test-resolution: keep the SR head (output = N × SR scale)")
    return p


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.use_sr and args.test_resolution is None:
        print("note: --use-sr only matters with --test-resolution; the default conversion keeps the SR head")
    summary = convert(args.checkpoint, args.output, fp16=not args.no_fp16, palettization=args.palettization,
                      test_resolution=args.test_resolution, use_sr=args.use_sr)
    print(f"Saved {summary['output']}: {summary['architecture']}, {summary['input_size']}² → "
          f"{summary['output_size']}², {summary['precision']}{', palettized' if summary['palettized'] else ''}, "
          f"SR head {'kept' if summary['sr_head'] else 'not used'}, iOS 17+")
    return summary


def main(argv: list[str] | None = None) -> None:
    """Console script ``neuropbr-coreml-convert``."""
    cli_entry(run)(argv)


if __name__ == "__main__":
    main()
