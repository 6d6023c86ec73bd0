"""Export a trained DeblurUNet to ONNX with dynamic batch, height and width."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from deblur_unet.inference import load_model
from shared.errors import ConfigError, cli_entry

OPSET = 18


def export_onnx(model: torch.nn.Module, output: str | Path, sample_size: int = 64, opset: int = OPSET) -> Path:
    """Write ``model`` (in [-1, 1] → out) as ONNX with input ``input`` ``(N, 3, H, W)``, all three dynamic.

    The legacy TorchScript exporter is used: it records the U-Net's size-dependent skip alignment as
    shape ops, so one file serves every tile size.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    dummy = torch.randn(1, 3, sample_size, sample_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    tmp = output.with_name(f".{output.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; the result is checked below
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dynamic, "output": dynamic}, opset_version=opset,
                          dynamo=False)
    tmp.replace(output)  # a failed export never leaves a half-written model.onnx behind
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deblur-export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Export a DeblurUNet checkpoint to ONNX (dynamic H and W).")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (best.pth / latest.pth)")
    parser.add_argument("--output", default="model.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the file with onnx.checker and compare onnxruntime with PyTorch")
    return parser


def verify(model: torch.nn.Module, path: Path, size: tuple[int, int] = (96, 80)) -> float:
    """Max absolute difference between onnxruntime and PyTorch on a random ``size`` input."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    return float(np.abs(got - expected).max())


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".onnx"):
        raise ConfigError(f"{args.output}: --output should end with .onnx")
    model = load_model(args.checkpoint, "cpu")
    path = export_onnx(model, args.output, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.verify:
        try:
            diff = verify(model, path)
        except ImportError:
            print("skipped verification: install the onnx extra (onnx, onnxruntime)")
        else:
            print(f"onnxruntime vs PyTorch on a 96×80 input: max |diff| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
