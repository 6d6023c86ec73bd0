"""Export a student to ONNX for CPU deployment off Apple hardware (``python -m neuropbr.export_onnx``).

The graph is the Core ML one (:class:`~neuropbr.coreml.wrapper.DeployWrapper`): inputs ``view_0``,
``view_1``, ``view_2`` as float32 ``(1, 3, N, N)`` RGB in [0, 1], ImageNet normalisation inside,
outputs ``albedo``, ``roughness``, ``metallic``, ``normal``. ``--check`` runs onnxruntime on random
views and reports the largest difference from PyTorch.
"""

from __future__ import annotations

import argparse
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuropbr.coreml.wrapper import INPUT_NAMES, OUTPUT_NAMES, DeployWrapper
from neuropbr.student.factory import load_student
from shared.errors import ConfigError, UserError, cli_entry

OPSET = 17


def export(checkpoint: str | os.PathLike, output: str | os.PathLike, resolution: int | None = None,
           use_sr: bool = True) -> dict[str, Any]:
    """Write the ONNX file; returns a summary with the input/output sizes."""
    try:
        import onnx
    except ImportError:
        raise UserError("onnx is not installed: `uv sync --package neuropbr --extra onnx`") from None
    model, cfg = load_student(checkpoint)
    size = resolution or cfg.data.image_size
    if size % 32:
        raise ConfigError(f"--resolution must be a multiple of 32, got {size}")
    wrapper = DeployWrapper(model, cfg, use_sr=use_sr).eval()
    example = tuple(torch.rand(1, 3, size, size) for _ in INPUT_NAMES)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: no onnxscript dependency, and static shapes are what deployment wants.
        torch.onnx.export(wrapper, example, buffer, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    proto.metadata_props.add(key="neuropbr.architecture", value=cfg.model.arch)
    proto.metadata_props.add(key="neuropbr.input_size", value=str(size))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, output)
    scale = cfg.model.sr_scale if use_sr else 1
    return {"architecture": cfg.model.arch, "input_size": size, "output_size": size * scale, "output": str(output)}


def parity(checkpoint: str | os.PathLike, onnx_path: str | os.PathLike, use_sr: bool = True, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs on random views."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("onnxruntime is not installed: `uv sync --package neuropbr --extra onnx`") from None
    model, cfg = load_student(checkpoint)
    wrapper = DeployWrapper(model, cfg, use_sr=use_sr).eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[-1]
    g = torch.Generator().manual_seed(seed)
    views = [torch.rand(1, 3, size, size, generator=g) for _ in INPUT_NAMES]
    with torch.no_grad():
        expected = wrapper(*views)
    got = session.run(list(OUTPUT_NAMES), {n: v.numpy() for n, v in zip(INPUT_NAMES, views, strict=True)})
    return max(float(np.abs(e.numpy() - o).max()) for e, o in zip(expected, got, strict=True))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuropbr.export_onnx", description="Export a NeuroPBR student to ONNX.")
    p.add_argument("checkpoint", help="student checkpoint (best_student.pth, best.pth, latest.pth)")
    p.add_argument("--output", default="pbr_student.onnx", help="output .onnx file")
    p.add_argument("--resolution", type=int, help="input size (default: the config's image_size)")
    p.add_argument("--no-sr", action="store_true", help="bypass the SR head (output at input resolution)")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch on random views")
    return p


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    summary = export(args.checkpoint, args.output, args.resolution, use_sr=not args.no_sr)
    print(f"Saved {summary['output']}: {summary['architecture']}, {summary['input_size']}² → {summary['output_size']}²")
    if args.check:
        summary["max_abs_diff"] = parity(args.checkpoint, args.output, use_sr=not args.no_sr)
        print(f"onnxruntime vs PyTorch: max |diff| = {summary['max_abs_diff']:.2e}")
    return summary


def main(argv: list[str] | None = None) -> None:
    cli_entry(run)(argv)


if __name__ == "__main__":
    main()
