"""Distillation shards: the teacher's predictions in float16, with an index to find any sample.

Layout of a shards folder::

    index.json            format, version, output size, shard size, source, and per shard its keys
    shard_00000.pt        {"keys": [...], "albedo": (n,3,S,S) f16, "roughness": (n,1,S,S) f16,
    shard_00001.pt         "metallic": (n,1,S,S) f16, "normal": (n,3,S,S) f16}

A sample key names where the renders came from (``clean/sample_0003``, ``dirty/sample_0003``,
``synthetic/sample_0003``). Every shard file is written atomically (temp file + rename) and the index
is rewritten atomically after each shard, so a killed run leaves only complete shards; rerunning skips
them. Shards store predictions only: the student loader reads renders and ground truth from the PNGs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.errors import DataError

SHARD_FORMAT = "neuropbr-teacher-shards"
SHARD_VERSION = 1
INDEX_NAME = "index.json"
MAP_CHANNELS = {"albedo": 3, "roughness": 1, "metallic": 1, "normal": 3}
Maps = dict[str, torch.Tensor]


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.pt"


def resize_maps(maps: Maps, size: int) -> Maps:
    """Resize ``(…, C, H, W)`` maps to ``size``² (antialiased area-like bilinear down, bilinear up);
    normals are re-normalised to unit length afterwards."""
    out = {}
    for name, value in maps.items():
        squeeze = value.dim() == 3
        x = value.unsqueeze(0) if squeeze else value
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size)
            if name == "normal":
                x = F.normalize(x, dim=1, eps=1e-6)
        out[name] = x[0] if squeeze else x
    return out


def plan_shards(keys: Sequence[str], shard_size: int) -> list[list[str]]:
    """Split ``keys`` (in order) into consecutive groups of ``shard_size``."""
    if shard_size < 1:
        raise DataError(f"--shard-size must be >= 1, got {shard_size}")
    return [list(keys[i : i + shard_size]) for i in range(0, len(keys), shard_size)]


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: shard index not found (run teacher_infer.py --shards-dir {path.parent} first)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: shard index is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
        raise DataError(f"{path}: not a NeuroPBR shard index (format is not '{SHARD_FORMAT}')")
    if data.get("version") != SHARD_VERSION:
        raise DataError(f"{path}: shard index version {data.get('version')} is not supported (expected {SHARD_VERSION})")
    if not isinstance(data.get("shards"), list):
        raise DataError(f"{path}: shard index has no 'shards' list")
    return data


class ShardWriter:
    """Writes the planned shards of one run; :meth:`is_complete` tells a resumed run what to skip.

    Rerunning into a folder made with another output size, shard size or sample list is refused
    rather than silently mixing two sets of predictions.
    """

    def __init__(self, shards_dir: str | os.PathLike, keys: Sequence[str], shard_size: int = 8,
                 output_size: int | None = None, source: dict[str, Any] | None = None) -> None:
        self.dir = Path(shards_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / INDEX_NAME
        self.output_size = output_size
        plan = plan_shards(list(keys), shard_size)
        if not plan:
            raise DataError(f"{shards_dir}: nothing to write (no samples)")
        fresh = {
            "format": SHARD_FORMAT, "version": SHARD_VERSION, "dtype": "float16",
            "shard_size": shard_size, "output_size": output_size, "num_samples": len(keys),
            "map_channels": MAP_CHANNELS, "source": dict(source or {}), "complete": False,
            "shards": [{"file": shard_name(i), "keys": group, "done": False, "bytes": 0} for i, group in enumerate(plan)],
        }
        if self.index_path.exists():
            old = _read_index(self.index_path)
            for key in ("shard_size", "output_size"):
                if old.get(key) != fresh[key]:
                    raise DataError(f"{self.index_path}: existing shards have {key}={old.get(key)}, this run "
                                    f"asks for {fresh[key]}; use another --shards-dir")
            if [s["keys"] for s in old["shards"]] != [s["keys"] for s in fresh["shards"]]:
                raise DataError(f"{self.index_path}: existing shards cover another sample list; use another --shards-dir")
            fresh["shards"] = old["shards"]
            fresh["output_size"] = old.get("output_size")
            if "output_size_actual" in old:
                fresh["output_size_actual"] = old["output_size_actual"]
        fresh["complete"] = all(s["done"] for s in fresh["shards"])
        self.index = fresh
        _write_json_atomic(self.index_path, self.index)

    @property
    def plan(self) -> list[list[str]]:
        return [s["keys"] for s in self.index["shards"]]

    def is_complete(self, shard: int) -> bool:
        entry = self.index["shards"][shard]
        path = self.dir / entry["file"]
        return bool(entry["done"]) and path.is_file() and path.stat().st_size == entry["bytes"]

    def write(self, shard: int, maps: Maps) -> Path:
        """Save ``maps`` (``(n, C, S, S)`` each, in plan order) as float16, then mark the shard done."""
        entry = self.index["shards"][shard]
        n = len(entry["keys"])
        payload: dict[str, Any] = {"keys": list(entry["keys"])}
        for name, channels in MAP_CHANNELS.items():
            value = maps[name]
            if value.dim() != 4 or value.shape[0] != n or value.shape[1] != channels:
                raise ValueError(f"shard {shard}: '{name}' has shape {tuple(value.shape)}, expected ({n}, {channels}, S, S)")
            payload[name] = value.detach().to("cpu", torch.float16).contiguous()
        path = save_checkpoint(self.dir / entry["file"], payload)
        entry.update(done=True, bytes=path.stat().st_size)
        if self.index["output_size"] is None:
            self.index["output_size_actual"] = int(payload["albedo"].shape[-1])
        self.index["complete"] = all(s["done"] for s in self.index["shards"])
        _write_json_atomic(self.index_path, self.index)
        return path


class ShardIndex:
    """Read side: ``index[key]`` → the teacher's four maps for that sample as float32 ``(C, S, S)``.

    Shard files are memory-mapped, so a lookup reads one sample's bytes, not the whole shard; a few
    recently used shards stay open per process (each DataLoader worker has its own).
    """

    def __init__(self, shards_dir: str | os.PathLike, cache_shards: int = 4) -> None:
        self.dir = Path(shards_dir)
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: shards folder not found")
        self.data = _read_index(self.dir / INDEX_NAME)
        self.lookup: dict[str, tuple[int, int]] = {}
        for shard, entry in enumerate(self.data["shards"]):
            if not entry.get("done"):
                continue
            for pos, key in enumerate(entry["keys"]):
                self.lookup[key] = (shard, pos)
        if not self.lookup:
            raise DataError(f"{self.dir}: the shard index lists no complete shard (teacher_infer.py did not finish one)")
        self.cache_shards = cache_shards
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()

    @property
    def output_size(self) -> int | None:
        return self.data.get("output_size") or self.data.get("output_size_actual")

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    def keys(self) -> list[str]:
        return list(self.lookup)

    def __len__(self) -> int:
        return len(self.lookup)

    def __contains__(self, key: str) -> bool:
        return key in self.lookup

    def _shard(self, shard: int) -> dict[str, Any]:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        path = self.dir / self.data["shards"][shard]["file"]
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except FileNotFoundError:
            raise DataError(f"{path}: shard listed in the index is missing") from None
        except Exception:  # noqa: BLE001 - fall back to the checked loader for its one-line message
            payload = load_checkpoint(path)
        self._cache[shard] = payload
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return payload

    def __getitem__(self, key: str) -> Maps:
        if key not in self.lookup:
            raise DataError(f"{self.dir}: sample '{key}' has no teacher prediction in the shards "
                            "(regenerate them with teacher_infer.py over the same data)")
        shard, pos = self.lookup[key]
        payload = self._shard(shard)
        if payload["keys"][pos] != key:
            raise DataError(f"{self.dir / self.data['shards'][shard]['file']}: shard does not match the index "
                            f"(position {pos} holds '{payload['keys'][pos]}', index says '{key}')")
        return {name: payload[name][pos].float() for name in MAP_CHANNELS}
