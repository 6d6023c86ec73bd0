"""Sliding-window tiling and blended stitching, so a convolutional model runs on any image size.

Shape contract (``t`` = tile size, ``s`` = a model output's scale, e.g. 2 for a ×2 SR head):

* :func:`tile_tensor` ``(B, C, H, W) -> (N*B, C, t, t)`` plus ``N`` ``(top, left)`` corners, tile-major.
* :func:`stitch_tiles` ``(N*B, C', t·s, t·s) -> (B, C', H·s, W·s)``, weights normalised by their sum.
* :func:`tiled_forward` ``fn: (b, C, t, t) -> (b, C', t·s, t·s)`` (or a tuple/dict of such, each with its
  own ``C'`` and ``s``) applied to an image ``(B, C, H, W)`` → the same structure at ``(B, C', H·s, W·s)``.

Tiles start every ``t - overlap`` pixels and the last row/column is aligned with the image edge, so
no image size is special; an image smaller than a tile is reflect-padded up to it and the result is
cropped back. Because blend weights are strictly positive and normalised by their sum, stitching
untouched tiles returns the input exactly, whatever the mode.

A model with ``nn.GroupNorm`` normalises each tile by that tile's statistics, so its tiled output depends
on the tile size; ``tiled_forward(..., norm_stats="image")`` (exact, about ``L/2 + 1`` tiled passes for
``L`` GroupNorm calls) or ``"downscaled"`` (one extra pass over a small copy) give every GroupNorm the
whole image's ``(B, G)`` statistics instead, as Tiled VAE does; shapes and outputs are unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

BlendMode = Literal["linear", "gaussian", "constant"]
BLEND_MODES: tuple[str, ...] = ("linear", "gaussian", "constant")
NormStats = Literal["tile", "image", "downscaled"]
NORM_STATS: tuple[str, ...] = ("tile", "image", "downscaled")


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` pixels, the last one flush with the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _check_tiling(tile_size: int, overlap: int) -> int:
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got overlap={overlap}, tile_size={tile_size}")
    return tile_size - overlap


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad the bottom/right of ``x`` up to ``height × width`` by reflection (replicate where too small)."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return x
    pad = (0, max(pad_w, 0), 0, max(pad_h, 0))
    # Reflection needs the pad to be smaller than the side; a tiny image falls back to replication.
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, pad, mode=mode)


def tile_positions(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every tile covering a ``height × width`` image (row-major)."""
    stride = _check_tiling(tile_size, overlap)
    return [(top, left) for top in _starts(height, tile_size, stride) for left in _starts(width, tile_size, stride)]


def tile_tensor(x: torch.Tensor, tile_size: int, overlap: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Cut ``x`` into overlapping square tiles.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)``, any ``H``, ``W``.
        tile_size: side ``t`` of each tile.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < t``.

    Returns:
        ``tiles`` of shape ``(N*B, C, t, t)`` (``(N, C, t, t)`` for a 3-D input), tile-major, on
        ``x.device``; and the ``N`` ``(top, left)`` corners in the padded image.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"tile_tensor expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    batched = x.unsqueeze(0) if x.dim() == 3 else x
    height, width = batched.shape[-2:]
    padded = _pad_to(batched, max(height, tile_size), max(width, tile_size))
    positions = tile_positions(padded.shape[-2], padded.shape[-1], tile_size, overlap)
    tiles = torch.cat([padded[..., top : top + tile_size, left : left + tile_size] for top, left in positions], dim=0)
    return tiles, positions


def create_blend_weight(
    tile_size: int,
    overlap: int,
    mode: str = "linear",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A ``(t, t)`` map of strictly positive blend weights for one tile.

    * ``linear``: feathering — weight ramps up over ``overlap`` pixels from each edge, 1 inside.
    * ``gaussian``: a centred Gaussian with sigma = t/8 (MONAI's default), floored at 1e-3.
    * ``constant``: uniform averaging.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}'; choose one of {', '.join(BLEND_MODES)}")
    coords = torch.arange(tile_size, dtype=torch.float64)
    if mode == "constant" or (mode == "linear" and overlap == 0):
        ramp = torch.ones(tile_size, dtype=torch.float64)
    elif mode == "linear":
        distance_to_edge = torch.minimum(coords + 1, tile_size - coords)
        ramp = (distance_to_edge / (overlap + 1)).clamp(max=1.0)
    else:
        sigma = tile_size * 0.125
        ramp = torch.exp(-((coords - (tile_size - 1) / 2) ** 2) / (2 * sigma**2))
    weight = torch.outer(ramp, ramp)
    if mode == "gaussian":
        weight = (weight / weight.max()).clamp(min=1e-3)
    return weight.to(device=device, dtype=dtype)


def stitch_tiles(
    tiles: torch.Tensor,
    positions: Sequence[tuple[int, int]],
    out_shape: Sequence[int],
    overlap: int,
    mode: str = "linear",
) -> torch.Tensor:
    """Blend tiles from :func:`tile_tensor` back into one image of ``out_shape``.

    Args:
        tiles: ``(N*B, C, t, t)`` tile-major (or ``(N, C, t, t)`` for a 3-D ``out_shape``).
        positions: the ``N`` corners :func:`tile_tensor` returned.
        out_shape: ``(B, C, H, W)`` or ``(C, H, W)`` of the unpadded image.
        overlap: the overlap used for tiling.
        mode: blend mode (see :func:`create_blend_weight`).

    Returns:
        The image, on the tiles' device, in float32 (or the tiles' float dtype if wider).
    """
    squeeze = len(out_shape) == 3
    batch, channels, height, width = (1, *out_shape) if squeeze else tuple(out_shape)
    tile_h, tile_w = tiles.shape[-2:]
    if tile_h != tile_w:
        raise ValueError(f"tiles must be square, got {tile_h}×{tile_w}")
    if tiles.shape[0] != len(positions) * batch:
        raise ValueError(f"expected {len(positions) * batch} tiles for {len(positions)} positions × batch {batch}")
    padded_h, padded_w = max(height, tile_h), max(width, tile_w)
    dtype = torch.promote_types(tiles.dtype, torch.float32)
    out = torch.zeros((batch, channels, padded_h, padded_w), device=tiles.device, dtype=dtype)
    weight_sum = torch.zeros((padded_h, padded_w), device=tiles.device, dtype=dtype)
    weight = create_blend_weight(tile_h, overlap, mode, device=tiles.device, dtype=dtype)
    for index, (top, left) in enumerate(positions):
        chunk = tiles[index * batch : (index + 1) * batch].to(dtype)
        out[..., top : top + tile_h, left : left + tile_w] += chunk * weight
        weight_sum[top : top + tile_h, left : left + tile_w] += weight
    out = (out / weight_sum)[..., :height, :width]
    return out[0] if squeeze else out


def _flatten(output: Any) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """Outputs as a list, plus a function that rebuilds the caller's structure."""
    if isinstance(output, torch.Tensor):
        return [output], lambda parts: parts[0]
    if isinstance(output, dict):
        keys = list(output)
        return [output[k] for k in keys], lambda parts: dict(zip(keys, parts, strict=True))
    if isinstance(output, (tuple, list)):
        kind = type(output)
        return list(output), lambda parts: kind(parts)
    raise TypeError(f"tiled_forward: fn must return a tensor, tuple, list or dict of tensors, got {type(output)}")


def _batches(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def tiled_forward(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    mode: str = "linear",
    scale: float = 1,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    margin: int = 0,
    norm_stats: str = "tile",
    norm_model: torch.nn.Module | None = None,
    norm_size: int | None = None,
) -> Any:
    """Run ``fn`` over overlapping tiles of ``x`` and blend the results into full-size outputs.

    Args:
        fn: maps a batch of tiles ``(b, C, t, t)`` to a tensor ``(b, C', t·s, t·s)`` or a tuple/list/dict
            of such tensors (each output may have its own channel count and scale ``s``).
        x: ``(B, C, H, W)`` or ``(C, H, W)``; any size.
        tile_size, overlap: tiling geometry in input pixels (``0 <= overlap < tile_size``).
        batch_size: tiles per call of ``fn``; peak memory is the outputs plus this many tiles.
        mode: blend mode, ``linear`` (feathering), ``gaussian`` or ``constant``.
        scale: the expected scale of the first output (e.g. 2 for ×2 super-resolution); further
            outputs' scales are read from their tile sizes (0.5 for a half-resolution mask).
        device: where ``fn`` runs (default ``x.device``); tiles go there in batches and results come
            back, so an image in CPU memory can be processed on a GPU.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast around ``fn``.
        channels_last: feed tiles to ``fn`` in channels-last memory format (faster convs on CPU/CUDA).
        margin: input pixels along each *interior* tile edge (one shared with a neighbour) that get
            zero weight, as in the U-Net overlap-tile strategy; with ``margin`` at least half the
            model's receptive field and ``overlap > 2 * margin``, the result equals the untiled forward.
            Edges on the image border always keep their weight, so every pixel stays covered.
        norm_stats: where each ``nn.GroupNorm`` of ``norm_model`` takes its statistics from:
            ``tile`` (each tile its own, as a plain forward of a tile does), ``image`` (the whole image's,
            exactly: one extra pass over the tiles per GroupNorm call, see :class:`_GroupNormStats`), or
            ``downscaled`` (estimated by one untiled pass over a copy whose longer side is ``norm_size``).
            Other layers are untouched, so a model without GroupNorm gives the plain tiled result.
        norm_model: the module whose GroupNorm layers ``fn`` runs (default: ``fn`` itself when it is a
            module); needed for any ``norm_stats`` but ``tile``.
        norm_size: longer side of the ``downscaled`` copy, in pixels (default ``tile_size``, so the
            extra pass costs about one tile's forward and memory). A copy smaller than the image is only
            an estimate, and a poor one for a model that reacts to fine detail: for the deblur U-Net,
            halving the image left its output 0.9/255 from the untiled one, a quarter 1.6/255, no
            closer than per-tile statistics; a copy at the image's own size gives the exact statistics.

    Returns:
        The same structure ``fn`` returns, each tensor ``(B, C', H·s, W·s)`` (no batch dimension for a
        3-D ``x``), float32, on ``x.device``.
    """
    from shared.amp import autocast

    if x.dim() not in (3, 4):
        raise ValueError(f"tiled_forward expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if margin < 0 or (margin > 0 and overlap <= 2 * margin):
        raise ValueError(f"margin must satisfy 0 <= 2*margin < overlap, got margin={margin}, overlap={overlap}")
    if norm_stats not in NORM_STATS:
        raise ValueError(f"unknown norm_stats '{norm_stats}'; choose one of {', '.join(NORM_STATS)}")
    if norm_stats != "tile" and norm_model is None:
        if not isinstance(fn, torch.nn.Module):
            raise ValueError(f"norm_stats='{norm_stats}' needs norm_model= (the module whose GroupNorm "
                             "layers fn runs) when fn is not itself a module")
        norm_model = fn
    squeeze = x.dim() == 3
    image = x.unsqueeze(0) if squeeze else x
    compute_device = torch.device(device) if device is not None else image.device
    batch, channels, height, width = image.shape
    padded = _pad_to(image, max(height, tile_size), max(width, tile_size))
    padded_h, padded_w = padded.shape[-2:]
    positions = tile_positions(padded_h, padded_w, tile_size, overlap)
    jobs = [(b, top, left) for (top, left) in positions for b in range(batch)]

    outputs: list[torch.Tensor] | None = None
    weights: list[torch.Tensor] = []
    scales: list[float] = []
    rebuild: Callable[[list[torch.Tensor]], Any] | None = None
    tile_buffer = torch.empty((min(batch_size, len(jobs)), channels, tile_size, tile_size),
                              dtype=padded.dtype, device=padded.device)

    def call(inputs: torch.Tensor) -> Any:
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(compute_device, precision):
            return fn(inputs)

    norm = (_GroupNormStats(norm_model, batch, tile_size, overlap, positions, height, width)
            if norm_stats != "tile" else None)
    # Only fn runs in inference mode: buffers made there would be inference tensors, which callers
    # could not modify in place or use next to autograd afterwards.
    with torch.no_grad(), (norm if norm is not None else contextlib.nullcontext()):
        if norm is not None and norm_stats == "downscaled":
            side = norm_size or tile_size
            factor = min(1.0, side / max(height, width))
            small = image if factor == 1.0 else F.interpolate(
                image.float(), size=(max(1, round(height * factor)), max(1, round(width * factor))),
                mode="bilinear", antialias=True, align_corners=False).to(image.dtype)
            norm.record_whole(lambda: call(small.to(compute_device)))
        while True:
            if norm is not None:
                norm.begin_pass()
            for job_range in _batches(len(jobs), batch_size):
                tiles = tile_buffer[: len(job_range)]
                for slot, job_index in enumerate(job_range):
                    b, top, left = jobs[job_index]
                    tiles[slot].copy_(padded[b, :, top : top + tile_size, left : left + tile_size])
                inputs = tiles.to(compute_device, non_blocking=True)
                if norm is not None:
                    norm.slots = [jobs[job_index] for job_index in job_range]
                    if not norm.run(lambda inputs=inputs: call(inputs)):
                        continue  # this batch only added its share of a GroupNorm's image statistics
                    result = norm.result
                else:
                    result = call(inputs)
                parts, rebuild_fn = _flatten(result)
                if outputs is None:
                    rebuild = rebuild_fn
                    outputs, weights, scales = _allocate_outputs(
                        parts, image.device, batch, padded_h, padded_w, tile_size, overlap, mode, scale, margin
                    )
                for part, out, weight, s in zip(parts, outputs, weights, scales, strict=True):
                    part = part.to(device=image.device, dtype=out.dtype)
                    size = int(round(tile_size * s))
                    for slot, job_index in enumerate(job_range):
                        b, top, left = jobs[job_index]
                        top_s, left_s = int(top * s), int(left * s)
                        tile_weight = weight(_inner_sides(top, left, tile_size, padded_h, padded_w))
                        out[b, :, top_s : top_s + size, left_s : left_s + size].addcmul_(part[slot], tile_weight)
            if norm is None or not norm.end_pass():
                break

        assert outputs is not None and rebuild is not None
        results = []
        for out, weight, s in zip(outputs, weights, scales, strict=True):
            weight_sum = _weight_sum(positions, weight, tile_size, padded_h, padded_w, s)
            out.div_(weight_sum)
            cropped = out[..., : int(round(height * s)), : int(round(width * s))]
            results.append(cropped[0] if squeeze else cropped)
    return rebuild(results)


def _inner_sides(top: int, left: int, tile: int, height: int, width: int) -> tuple[bool, bool, bool, bool]:
    """Which tile edges (top, bottom, left, right) face a neighbour rather than the image border."""
    return top > 0, top + tile < height, left > 0, left + tile < width


def _edge_weight(size: int, overlap: int, mode: str, margin: int, inner: tuple[bool, bool, bool, bool],
                 device) -> torch.Tensor:
    """One tile's weights: the blend profile toward neighbours, flat (1) toward the image border."""
    coords = torch.arange(size, dtype=torch.float64)

    def axis(inner_start: bool, inner_end: bool) -> torch.Tensor:
        ramp = torch.ones(size, dtype=torch.float64)
        if mode == "linear" and overlap > 0:
            width = overlap - 2 * margin + 1
            if inner_start:
                ramp = torch.minimum(ramp, ((coords - margin + 1) / width).clamp(0, 1))
            if inner_end:
                ramp = torch.minimum(ramp, ((size - coords - margin) / width).clamp(0, 1))
        elif mode == "gaussian":
            sigma = size * 0.125
            ramp = torch.exp(-((coords - (size - 1) / 2) ** 2) / (2 * sigma**2)).clamp(min=1e-3)
        if margin:
            if inner_start:
                ramp[:margin] = 0
            if inner_end:
                ramp[size - margin :] = 0
        return ramp

    top, bottom, left, right = inner
    return torch.outer(axis(top, bottom), axis(left, right)).to(device=device, dtype=torch.float32)


def _allocate_outputs(parts, device, batch, padded_h, padded_w, tile_size, overlap, mode, scale, margin):
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}'; choose one of {', '.join(BLEND_MODES)}")
    outputs, weights, scales = [], [], []
    for index, part in enumerate(parts):
        if part.dim() != 4 or part.shape[-1] != part.shape[-2]:
            raise ValueError(f"tiled_forward: output {index} must be (b, C, s·t, s·t), got {tuple(part.shape)}")
        s = part.shape[-1] / tile_size
        if index == 0 and not math.isclose(s, scale):
            raise ValueError(
                f"tiled_forward: fn returned {part.shape[-1]}px tiles for {tile_size}px inputs "
                f"(scale {s:g}) but scale={scale:g} was given"
            )
        if not (overlap * s).is_integer() or not (margin * s).is_integer():
            raise ValueError(f"tiled_forward: overlap {overlap} × output scale {s:g} is not a whole pixel count")
        outputs.append(torch.zeros((batch, part.shape[1], int(round(padded_h * s)), int(round(padded_w * s))),
                                   device=device, dtype=torch.float32))
        # At most 9 distinct edge patterns per image: build each weight map once, not once per tile.
        cache: dict[tuple[bool, ...], torch.Tensor] = {}

        def weight(inner, size=part.shape[-1], ov=int(overlap * s), mg=int(margin * s), cache=cache):
            if inner not in cache:
                cache[inner] = _edge_weight(size, ov, mode, mg, inner, device)
            return cache[inner]

        weights.append(weight)
        scales.append(s)
    return outputs, weights, scales


def _weight_sum(positions, weight, tile_size: int, padded_h: int, padded_w: int, s: float) -> torch.Tensor:
    height, width = int(round(padded_h * s)), int(round(padded_w * s))
    size = int(round(tile_size * s))
    total = torch.zeros((height, width), dtype=torch.float32, device=weight((False,) * 4).device)
    for top, left in positions:
        top_s, left_s = int(top * s), int(left * s)
        total[top_s : top_s + size, left_s : left_s + size] += weight(
            _inner_sides(top, left, tile_size, padded_h, padded_w))
    return total


class _StatsCollected(Exception):
    """Ends a tile's forward once the GroupNorm being measured has seen it; nothing after it is needed."""


def _ownership(starts: list[int], tile: int, length: int) -> dict[int, tuple[int, int]]:
    """Per tile origin along one axis, the pixels ``[lo, hi)`` it alone accounts for.

    Neighbours split their overlap at its middle and nothing past ``length`` (reflect padding) counts,
    so the pieces partition ``[0, length)`` and each lies at least ``overlap / 2`` from an interior tile
    edge, where zero padding inside the tile has corrupted the least.
    """
    bounds = [0] + [(prev + tile + nxt) // 2 for prev, nxt in itertools.pairwise(starts)] + [length]
    return {start: (min(lo, length), min(hi, length)) for start, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)}


class _GroupNormStats:
    """Forward hooks that give every ``nn.GroupNorm`` call of a model the whole image's statistics.

    GroupNorm normalises each sample's ``(C/G, h, w)`` group with that sample's mean and variance, so a
    tile normally sees its own statistics and the tiled output depends on the tile size. Here GroupNorm
    calls are numbered in the order the forward makes them, and call ``k`` normalises with shared
    ``(B, G)`` statistics instead (mean and biased variance per image and group, then the module's own
    ``eps`` and affine), as Tiled VAE does.

    * ``image`` (exact): pass ``k`` runs every tile up to call ``k`` (calls before it already use the
      image's statistics), pools that call's input over the tiles (each pixel once, see
      :func:`_ownership`, mapped to the call's resolution by its size relative to the tile) with Chan's
      parallel variance, and stops the tile there; the first pass that meets no unmeasured call is the
      output. Cost: for ``L`` GroupNorm calls spread evenly through the network, about ``L / 2 + 1``
      tiled forwards (the stopped passes are partial); memory stays that of one tile batch.
    * ``downscaled`` (approximate): :meth:`record_whole` runs the model once, untiled, on a small copy and
      keeps each call's per-sample statistics. Cost: one forward of the copy.

    Agreement with the untiled forward: the image statistics are exact where each counted pixel is
    farther from an interior tile edge than the network's receptive field reaches (with the margin that
    makes plain tiling exact, the whole result is then exact); elsewhere they inherit the same
    zero-padding error plain tiling has, which is small beside the per-tile statistics.
    """

    def __init__(self, model: torch.nn.Module, batch: int, tile_size: int, overlap: int,
                 positions: Sequence[tuple[int, int]], height: int, width: int) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.batch, self.tile_size = batch, tile_size
        self.rows = _ownership(sorted({top for top, _ in positions}), tile_size, height)
        self.cols = _ownership(sorted({left for _, left in positions}), tile_size, width)
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []  # per call: mean, var, each (B, G)
        self.slots: list[tuple[int, int, int]] = []  # (b, top, left) of each tile in the running batch
        self.whole = False
        self.calls = 0
        self.result: Any = None
        self._saved: list[tuple[torch.nn.Module, Any]] = []

    def __enter__(self) -> _GroupNormStats:
        # The forward is replaced rather than hooked: a hook would run the module's own normalisation
        # first and throw it away, a full extra read and write of every GroupNorm input.
        for module in self.modules:
            self._saved.append((module, module.__dict__.get("forward")))
            module.forward = functools.partial(self._forward, module)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, forward in self._saved:
            if forward is None:
                del module.forward
            else:
                module.forward = forward
        self._saved = []

    def record_whole(self, forward: Callable[[], Any]) -> None:
        """Keep each GroupNorm call's statistics from one untiled forward (``downscaled``)."""
        self.whole, self.calls = True, 0
        try:
            forward()
        finally:
            self.whole = False

    def begin_pass(self) -> None:
        self._acc: list[tuple[float, torch.Tensor, torch.Tensor] | None] | None = None
        self._finished = self._stopped = 0

    def run(self, forward: Callable[[], Any]) -> bool:
        """One tile batch; False when it stopped early to measure a GroupNorm call."""
        self.calls = 0
        self._row_index: torch.Tensor | None = None
        try:
            self.result = forward()
        except _StatsCollected:
            self._stopped += 1
            stopped = True
        else:
            self._finished += 1
            stopped = False
        if self._stopped and self._finished:
            raise RuntimeError("tiled_forward: tiles made different numbers of GroupNorm calls; "
                               "norm_stats needs a forward whose layers do not depend on the data")
        return not stopped

    def end_pass(self) -> bool:
        """Turn the measured call's sums into statistics; True when another pass is needed."""
        if self._acc is None:
            return False
        if any(a is None for a in self._acc):
            raise RuntimeError("tiled_forward: an image had no pixel at a GroupNorm layer's resolution")
        means = torch.stack([a[1] for a in self._acc])  # type: ignore[index]
        variances = torch.stack([a[2] / a[0] for a in self._acc])  # type: ignore[index]
        self.stats.append((means.to(self._device, torch.float32), variances.to(self._device, torch.float32)))
        return True

    def _forward(self, module: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        index = self.calls
        self.calls += 1
        groups = module.num_groups
        if self.whole:
            var, mean = torch.var_mean(x.float().unflatten(1, (groups, -1)), dim=(2, 3, 4), unbiased=False)
            self.stats.append((mean, var))
            return F.group_norm(x, groups, module.weight, module.bias, module.eps)
        if index < len(self.stats):
            return self._normalise(module, x, index)
        self._accumulate(x, groups)
        raise _StatsCollected

    def _normalise(self, module: torch.nn.GroupNorm, x: torch.Tensor, index: int) -> torch.Tensor:
        mean, var = self.stats[index]
        if self._row_index is None or self._row_index.device != mean.device:
            self._row_index = torch.tensor([b for b, _, _ in self.slots], device=mean.device)
        mean, var = mean[self._row_index].to(x.device), var[self._row_index].to(x.device)
        n, c = x.shape[:2]
        per_group = c // module.num_groups
        # One fused per-channel affine, y = x·a + b, keeps x's memory format (channels-last stays so).
        scale = torch.rsqrt(var + module.eps).repeat_interleave(per_group, dim=1)
        shift = -mean.repeat_interleave(per_group, dim=1) * scale
        if module.affine:
            scale = scale * module.weight.float()
            shift = shift * module.weight.float() + module.bias.float()
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        y = torch.addcmul(shift.to(dtype).view(n, c, 1, 1), x.to(dtype), scale.to(dtype).view(n, c, 1, 1))
        return y.to(x.dtype)

    def _accumulate(self, x: torch.Tensor, groups: int) -> None:
        if self._acc is None:
            self._acc = [None] * self.batch
            self._device = x.device
        height, width = x.shape[-2:]
        scale_h, scale_w = height / self.tile_size, width / self.tile_size
        for slot, (b, top, left) in enumerate(self.slots):
            (lo_r, hi_r), (lo_c, hi_c) = self.rows[top], self.cols[left]
            r0, r1 = (max(0, min(height, round(v * scale_h) - round(top * scale_h))) for v in (lo_r, hi_r))
            c0, c1 = (max(0, min(width, round(v * scale_w) - round(left * scale_w))) for v in (lo_c, hi_c))
            region = x[slot, :, r0:r1, c0:c1]
            if region.numel() == 0:
                continue
            var, mean = torch.var_mean(region.float().unflatten(0, (groups, -1)), dim=(1, 2, 3), unbiased=False)
            count = float(region.numel() // groups)
            mean, m2 = mean.double().cpu(), var.double().cpu() * count
            previous = self._acc[b]
            if previous is None:
                self._acc[b] = (count, mean, m2)
            else:
                # Chan et al.'s pairwise update: no E[x²] - E[x]² cancellation on features with large means.
                n_a, mean_a, m2_a = previous
                total = n_a + count
                delta = mean - mean_a
                self._acc[b] = (total, mean_a + delta * (count / total), m2_a + m2 + delta**2 * (n_a * count / total))


def patch_grid(height: int, width: int, patch_size: int, stride: int, *,
               flush: bool = False) -> list[tuple[int, int]]:
    """``(top, left)`` corners of training patches over a ``height × width`` image, row-major.

    Patches start every ``stride`` pixels; when the last regular patch stops short of the edge, one
    more patch is added: crossing the edge, to be reflect-padded by the caller (see
    :func:`extract_patch`), or with ``flush=True`` ending exactly at the edge (overlapping its
    neighbour more, and no mirrored pixels). So every pixel lies in some patch, and patch size never
    changes. An image no larger than one patch gives the single patch ``(0, 0)``.
    """
    if patch_size <= 0 or stride <= 0:
        raise ValueError(f"patch_size and stride must be positive, got {patch_size}, {stride}")

    def starts(length: int) -> list[int]:
        if length <= patch_size:
            return [0]
        origins = list(range(0, length - patch_size + 1, stride))
        if origins[-1] + patch_size < length:
            origins.append(length - patch_size if flush else origins[-1] + stride)
        return origins

    return [(top, left) for top in starts(height) for left in starts(width)]


def extract_patch(image: np.ndarray, top: int, left: int, patch_size: int) -> np.ndarray:
    """A ``patch_size`` square of an ``(H, W, ...)`` array; outside the image it mirrors the border.

    The mirroring repeats the edge pixel (``fedcba|abcdef``), as OpenCV's ``BORDER_REFLECT`` does.
    """
    height, width = image.shape[:2]
    patch = image[top : top + patch_size, left : left + patch_size]
    pad_h, pad_w = patch_size - patch.shape[0], patch_size - patch.shape[1]
    if pad_h == 0 and pad_w == 0:
        return patch
    pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    # 'symmetric' repeats the edge pixel like cv2.BORDER_REFLECT; np.pad handles pads larger than the side.
    return np.pad(patch, pad, mode="symmetric")
