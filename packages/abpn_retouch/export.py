"""Export a trained ABPN for CPU serving: ONNX (ONNX Runtime) or OpenVINO IR, fp32 or int8.

Usage::

    uv run --package abpn_retouch --extra onnx export.py --checkpoint dc_newarchnew/best.pth --output abpn.onnx
    uv run --package abpn_retouch --extra onnx export.py --checkpoint dc_newarchnew/best.pth --precision int8 \
        --calibration-dir data/train/original --output abpn_int8.onnx
    uv run --package abpn_retouch infer.py --backend onnxruntime --precision int8 --model abpn_int8.onnx \
        --input photo.jpg --output out/
"""

import sys

from abpn_retouch.export import main

if __name__ == "__main__":
    sys.exit(main())
