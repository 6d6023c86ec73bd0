"""Run the trained teacher over a dataset and write distillation shards (``teacher_infer.py``).

Only the teacher's predictions are stored (float16, optionally downsampled with
``--shard-output-size``); the student loader reads renders and ground truth from the PNGs. Shards are
written atomically one by one and listed in ``index.json``; rerunning the same command skips the
shards already complete, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from neuropbr.inference import load_generator
from neuropbr.shards import ShardWriter, resize_maps
from shared.amp import PRECISIONS, autocast
from shared.device import resolve_device
from shared.errors import ConfigError, cli_entry


class _RealSource:
    """The teacher's own dataset (every clean and dirty render) at the teacher's input size."""

    def __init__(self, input_dir: Path, output_dir: Path, size: int, mean, std, metadata_path=None) -> None:
        from neuropbr.utils.dataset import PBRDataset

        self.ds = PBRDataset(input_dir, output_dir, metadata_path, transform_mean=mean, transform_std=std,
                             image_size=size, curriculum_mode=1)
        self.by_key = {self.ds.sample_key(i): i for i in range(len(self.ds))}

    def keys(self) -> list[str]:
        return list(self.by_key)

    def views(self, key: str) -> torch.Tensor:
        i = self.by_key[key]
        return self.ds.normalize(self.ds.load_views(i))


class _SyntheticSource:
    def __init__(self, num_samples: int, size: int, seed: int, mean, std) -> None:
        from neuropbr.utils.synthetic import SyntheticPBRDataset

        self.ds = SyntheticPBRDataset(num_samples=num_samples, image_size=size, seed=seed, transform_mean=mean,
                                      transform_std=std, curriculum_mode=1)
        self.by_key = {self.ds.sample_key(i): i for i in range(len(self.ds))}

    def keys(self) -> list[str]:
        return list(self.by_key)

    def views(self, key: str) -> torch.Tensor:
        return self.ds[self.by_key[key]][0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="teacher_infer.py", description="Write teacher-prediction shards for distillation.")
    p.add_argument("--checkpoint", required=True, help="trained teacher (checkpoints/best_model.pth, best.pth, latest.pth)")
    p.add_argument("--data-root", help="dataset root holding input/ and output/ (as train.py's --input-dir/--output-dir)")
    p.add_argument("--input-dir", help="renders folder (default <data-root>/input)")
    p.add_argument("--output-dir", help="ground-truth folder (default <data-root>/output)")
    p.add_argument("--metadata-path", help="render_metadata.json (default <input-dir>/render_metadata.json)")
    p.add_argument("--shards-dir", required=True, help="where shard_*.pt and index.json go")
    p.add_argument("--shard-output-size", type=int, help="downsample predictions to N×N before saving (e.g. 1024)")
    p.add_argument("--shard-size", type=int, default=8, help="samples per shard file (default 8)")
    p.add_argument("--batch-size", type=int, default=1, help="teacher batch size (default 1)")
    p.add_argument("--synthetic", action="store_true", help="run over the procedural --synthetic dataset instead")
    p.add_argument("--synthetic-samples", type=int, default=8, help="materials in the synthetic dataset (default 8)")
    p.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic materials (default 0)")
    p.add_argument("--synthetic-size", type=int, help="render size of synthetic views (default: the teacher's image_size)")
    p.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast precision (default fp32)")
    return p


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.shard_output_size is not None and args.shard_output_size < 1:
        raise ConfigError(f"--shard-output-size must be positive, got {args.shard_output_size}")
    device = resolve_device(args.device)
    model, cfg = load_generator(args.checkpoint, device)
    mean, std = list(cfg.transform.mean), list(cfg.transform.std)
    if args.synthetic:
        size = args.synthetic_size or cfg.data.image_size
        source: Any = _SyntheticSource(args.synthetic_samples, size, args.synthetic_seed, mean, std)
        origin = {"synthetic": True, "samples": args.synthetic_samples, "seed": args.synthetic_seed, "size": size}
    else:
        if not (args.data_root or (args.input_dir and args.output_dir)):
            raise ConfigError("give --data-root (with input/ and output/ inside) or both --input-dir and --output-dir, "
                              "or --synthetic")
        root = Path(args.data_root) if args.data_root else None
        input_dir = Path(args.input_dir) if args.input_dir else root / "input"
        output_dir = Path(args.output_dir) if args.output_dir else root / "output"
        source = _RealSource(input_dir, output_dir, cfg.data.image_size, mean, std, args.metadata_path)
        origin = {"synthetic": False, "input_dir": str(input_dir), "output_dir": str(output_dir)}
    origin["teacher_checkpoint"] = str(args.checkpoint)
    writer = ShardWriter(args.shards_dir, source.keys(), args.shard_size, args.shard_output_size, origin)
    todo = [i for i in range(len(writer.plan)) if not writer.is_complete(i)]
    skipped = len(writer.plan) - len(todo)
    if skipped:
        print(f"Resuming: {skipped} of {len(writer.plan)} shards already complete in {args.shards_dir}")
    for shard in tqdm(todo, desc="Shards", file=sys.stdout):
        keys = writer.plan[shard]
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(keys), args.batch_size):
            views = torch.stack([source.views(k) for k in keys[start : start + args.batch_size]]).to(device)
            with torch.no_grad(), autocast(device, args.precision):
                out = model(views)
            out = {k: v.float() for k, v in out.items()}
            if args.shard_output_size:
                out = resize_maps(out, args.shard_output_size)
            for name, value in out.items():
                parts.setdefault(name, []).append(value.cpu())
        writer.write(shard, {name: torch.cat(values) for name, values in parts.items()})
    summary = {"shards": len(writer.plan), "written": len(todo), "skipped": skipped,
               "samples": len(source.keys()), "shards_dir": str(args.shards_dir)}
    print(f"Wrote {len(todo)} shard(s), skipped {skipped}; {summary['samples']} samples indexed in "
          f"{Path(args.shards_dir) / 'index.json'}")
    return summary


def main(argv: list[str] | None = None) -> None:
    """Console script ``neuropbr-teacher-infer``."""
    cli_entry(run)(argv)


if __name__ == "__main__":
    main()
