"""Dependency-free figures (PIL): the loss-curve PNG every run leaves, and sample grids with column names."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (one JSON object per logged step)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


def plot_curves(records: list[dict], keys: Sequence[str], path: str | Path, title: str = "",
                size: tuple[int, int] = (900, 300), smooth_window: int = 5, max_dots: int = 60) -> Path:
    """One panel per key with data (own y-range), x = step; raw values light, moving average dark.

    Keys with no value yet get no panel (the title names them); a key with few values also gets a dot per
    value, so a short run's single point per key shows instead of an empty frame.
    """
    panels = [k for k in keys if any(k in r for r in records)]
    missing = [k for k in keys if k not in panels]
    width, height = size[0], size[1] * max(1, len(panels))
    img = Image.new("RGB", (width, height + 30), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title + (f"   (nothing logged yet: {', '.join(missing)})" if missing else ""), fill="black")
    for p, key in enumerate(panels):
        pts = [(r["step"], float(r[key])) for r in records if key in r]
        top, left, w, h = 30 + p * size[1] + 20, 60, width - 80, size[1] - 50
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        # A single step or a flat series gets a range around it, so its points sit mid-panel.
        x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, min(xs) + 1)
        pad = max(abs(ys[0]) * 0.1, 1e-6)
        y0, y1 = (min(ys), max(ys)) if max(ys) > min(ys) else (ys[0] - pad, ys[0] + pad)
        draw.rectangle([left, top, left + w, top + h], outline=(160, 160, 160))
        draw.text((left + 5, top - 15), key, fill="black")
        for frac in (0.0, 0.5, 1.0):
            yv = y0 + (y1 - y0) * frac
            draw.text((5, top + h - frac * h - 6), f"{yv:.3g}", fill=(90, 90, 90))
        draw.text((left, top + h + 4), f"step {x0}", fill=(90, 90, 90))
        draw.text((left + w - 60, top + h + 4), f"step {x1}", fill=(90, 90, 90))
        colour = COLOURS[p % len(COLOURS)]
        light = tuple(int(c + (255 - c) * 0.65) for c in colour)

        def to_xy(x, y, x0=x0, x1=x1, y0=y0, y1=y1, left=left, top=top, w=w, h=h):
            return left + (x - x0) / (x1 - x0) * w, top + h - (y - y0) / (y1 - y0) * h

        if len(pts) > 1:
            draw.line([to_xy(x, y) for x, y in pts], fill=light, width=1)
            draw.line([to_xy(x, y) for x, y in zip(xs, smooth(ys, smooth_window), strict=True)], fill=colour, width=2)
        if len(pts) <= max_dots:
            for x, y in pts:
                cx, cy = to_xy(x, y)
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


