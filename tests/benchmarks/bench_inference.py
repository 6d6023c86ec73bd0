"""Full-resolution inference of each package on CPU, through the function its inference CLI calls.

* ``abpn_retouch``: ``abpn_retouch.infer.retouch`` on a 4000×6000 photo (its defaults: 1024 tiles,
  overlap 256, one tile per forward, fp32).
* ``neuropbr``: ``neuropbr.inference.predict`` (what ``run_inference.py`` calls, resize mode) with the
  default teacher trained at the views' size, three views → four maps; ``neuropbr:1024`` etc.
* ``alphagan_matting``: ``alphagan_matting.infer.predict_alpha`` on a 512×512 image + trimap (the size
  of the shared samples; one 512 tile).
* ``gansformer_inpaint``: ``gansformer_inpaint.inference.inpaint`` (resize mode) on a 256×256 face (the
  spec's CelebA-HQ size).
* ``deblur_unet`` at 2048×2048 is ``ours`` in ``bench_tiling`` (the same ``tiled_forward`` call with
  channels_last that ``deblur_unet.inference.deblur_tensor`` makes), so ``run_all`` reuses that figure.

Weights are freshly initialised: no trained checkpoint ships, and neither time nor memory depends on
the values. ``python -m tests.benchmarks.bench_inference NAME[:SIZE][@REPEATS] ...`` imports everything
once and forks one child per item (clean peak memory without an interpreter start each); a child
warms up on a small crop, then times REPEATS runs (default 1) at full size and reports the median.
The last stdout line is JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from tests.benchmarks.common import median_seconds, run_forked

SIZES = {"abpn_retouch": "4000x6000", "neuropbr": "512", "alphagan_matting": "512", "gansformer_inpaint": "256"}

Run = Callable[[bool], object]  # full size or not: the warm-up runs on a small crop


def abpn_retouch(size: str) -> tuple[Run, str]:
    from abpn_retouch.infer import retouch
    from abpn_retouch.model import ABPN

    model = ABPN().eval()
    height, width = (int(v) for v in size.split("x"))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return (lambda full: retouch(model, image if full else image[:1024, :1024])), f"{width}×{height} photo"


def neuropbr(size: str) -> tuple[Run, str]:
    from neuropbr.inference import predict
    from neuropbr.models.generator import MultiViewPBRGenerator
    from neuropbr.train_config import get_default_config

    side = int(size)
    cfg = get_default_config()
    model = MultiViewPBRGenerator(cfg, quiet=True).eval()
    views = torch.rand(1, 3, 3, side, side)

    def run(full: bool):
        # Trained at the views' size, as run_inference.py would find it in the checkpoint's config.
        cfg.data.image_size = side if full else 64
        return predict(model, views if full else views[..., :64, :64], cfg)

    return run, f"3 views of {side}² → 4 maps"


def alphagan_matting(size: str) -> tuple[Run, str]:
    from alphagan_matting.infer import predict_alpha
    from alphagan_matting.schemas import Config
    from alphagan_matting.utils import build_generator

    side = int(size)
    cfg = Config()
    generator = build_generator(cfg.model).eval()
    rng = np.random.default_rng(0)
    image = rng.random((side, side, 3), dtype=np.float32)
    trimap = rng.choice(np.array([0, 128, 255], dtype=np.uint8), (side, side))

    def run(full: bool):
        crop = slice(None) if full else slice(0, 64)
        return predict_alpha(generator, image[crop, crop], trimap[crop, crop], cfg.general.mean, cfg.general.std,
                             torch.device("cpu"))

    return run, f"{side}×{side} image + trimap"


def gansformer_inpaint(size: str) -> tuple[Run, str]:
    from gansformer_inpaint.config import Config
    from gansformer_inpaint.inference import inpaint
    from gansformer_inpaint.training.trainer import build_models

    side = int(size)
    gen, _ = build_models(Config())
    gen.eval()
    image = torch.rand(3, side, side)
    mask = torch.zeros(1, side, side)
    mask[:, side // 4 : side // 2, side // 3 : 3 * side // 4] = 1

    def run(full: bool):
        crop = slice(None) if full else slice(0, 64)
        return inpaint(gen, image[:, crop, crop], mask[:, crop, crop])

    return run, f"{side}×{side} face, resize mode"


BUILDERS = {f.__name__: f for f in (abpn_retouch, neuropbr, alphagan_matting, gansformer_inpaint)}


def parse(item: str) -> tuple[str, str, int]:
    """``NAME[:SIZE][@REPEATS]`` → name, size, repeats (size defaults to ``SIZES``, repeats to 1)."""
    item, _, repeats = item.partition("@")
    name, _, size = item.partition(":")
    return name, size or SIZES[name], int(repeats or 1)


def measure(item: str) -> dict:
    torch.manual_seed(0)
    name, size, repeats = parse(item)
    run, what = BUILDERS[name](size)
    with torch.inference_mode():
        run(False)  # load kernels
        seconds = median_seconds(lambda: run(True), repeats, warmup=0)
    return {"item": item, "what": what, "seconds": seconds, "runs": repeats}


def neuropbr_tflop(size: int) -> float:
    """Forward TFLOP of the default teacher at ``size`` (counted on the meta device: no memory, ~0.1 s)."""
    from torch.utils.flop_counter import FlopCounterMode

    from neuropbr.models.generator import MultiViewPBRGenerator
    from neuropbr.train_config import get_default_config

    with torch.device("meta"):
        model = MultiViewPBRGenerator(get_default_config(), quiet=True).eval()
        views = torch.empty(1, 3, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(views)
    return counter.get_total_flops() / 1e12


PRELOAD = ("torch._dynamo", "abpn_retouch.infer", "neuropbr.inference", "alphagan_matting.infer", "gansformer_inpaint.inference",
           "gansformer_inpaint.training.trainer")


def main() -> None:
    items = sys.argv[1:]
    # Import only: the children then share the imports, and no OpenMP pool exists yet to break in a fork.
    for module in PRELOAD:
        importlib.import_module(module)
    results = {}
    for item in items:
        start = time.perf_counter()
        results[item] = run_forked(measure, item)
        print(f"  inference {item}: {results[item]['seconds']:.2f} s, {results[item]['peak_mb']:.0f} MiB "
              f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
