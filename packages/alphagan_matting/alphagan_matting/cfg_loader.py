"""Load and validate the YAML config (``yaml.safe_load`` only).

Every key of the spec's example is required; an unknown key, a missing key or a value of the wrong
type is a :class:`~shared.errors.ConfigError` naming the key path and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from alphagan_matting.schemas import OPTIONAL_SECTIONS, Config
from shared.errors import ConfigError

PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """The file itself, or (for a relative path like ``configs/x.yaml``) the packaged copy."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_absolute():
        parts = path.parts[1:] if path.parts and path.parts[0] == "configs" else path.parts
        packaged = PACKAGE_CONFIGS.joinpath(*parts) if parts else PACKAGE_CONFIGS
        if packaged.is_file():
            return packaged
    raise ConfigError(f"{path}: config file not found")


def load_config(path: str | Path) -> Config:
    """Read ``path`` and return a validated :class:`Config`."""
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (general, train, test), got {type(raw).__name__}")
    cfg = _build(Config, raw, "", path)
    validate_values(cfg, path)
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint)."""
    cfg = _build(Config, raw, "", Path(source))
    validate_values(cfg, Path(source))
    return cfg


def _build(cls: type, raw: Any, prefix: str, path: Path) -> Any:
    if raw is None:  # an empty section: report its first missing key, not its type
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{path}: unknown key '{prefix}{key}' (expected one of: {', '.join(fields)})")
    values = {}
    for name in fields:
        key = f"{prefix}{name}"
        if name not in raw:
            if cls is Config and name in OPTIONAL_SECTIONS:
                continue
            raise ConfigError(f"{path}: missing key '{key}'")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], f"{key}.", path)
        else:
            values[name] = _coerce(raw[name], hint, key, path)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, path: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: '{key}' must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if isinstance(hint, types.UnionType):
        raise TypeError(f"unsupported config type {hint}")
    if hint is bool or (hint is int and isinstance(value, bool)):
        if isinstance(value, bool):
            return int(value) if hint is int else value
        raise ConfigError(f"{path}: '{key}' must be a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: '{key}' must be an integer, got {value!r}")
    if hint is float:
        # YAML 1.1 reads '1e-5' (no dot) as a string; accept it as the number it obviously is.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: '{key}' must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: '{key}' must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint}")


def _check(ok: bool, path: Path, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: '{key}' {message}")


def validate_values(cfg: Config, path: Path) -> None:
    """Range checks that a type alone cannot express."""
    g, t = cfg.general, cfg.train
    _check(len(g.mean) == 3, path, "general.mean", "must have 3 values (RGB)")
    _check(len(g.std) == 3 and all(s > 0 for s in g.std), path, "general.std", "must have 3 positive values")
    _check(g.batch_size >= 1, path, "general.batch_size", "must be >= 1")
    for key, value in (("general.colab.use_colab", g.colab.use_colab), ("train.use_gan_loss", t.use_gan_loss),
                       ("train.amp.use_amp", t.amp.use_amp), ("train.amp.use_grad_scaler", t.amp.use_grad_scaler)):
        _check(value in (0, 1), path, key, f"must be 0 or 1, got {value}")
    names = {"general.colab.best_chkp_name": g.colab.best_chkp_name, "general.colab.last_chkp_name": g.colab.last_chkp_name}
    for key, name in names.items():
        # A base name in the checkpoint folder: a path or a periodic file's name would write elsewhere or clash.
        _check(bool(name) and not any(c in name for c in "/\\") and name not in (".", "..")
               and not name.startswith("checkpoint_"), path, key,
               f"must be a plain file name (no folder, not 'checkpoint_*'), got '{name}'")
    _check(g.colab.best_chkp_name != g.colab.last_chkp_name, path, "general.colab.best_chkp_name",
           f"must differ from general.colab.last_chkp_name (both '{g.colab.last_chkp_name}')")
    _check(t.amp.dtype in ("bf16", "fp16"), path, "train.amp.dtype", f"must be bf16 or fp16, got '{t.amp.dtype}'")
    _check(t.crop_size >= 16 and t.crop_size % 8 == 0, path, "train.crop_size", "must be a multiple of 8, >= 16")
    _check(not t.use_gan_loss or t.crop_size >= 24, path, "train.crop_size",
           "must be >= 24 with use_gan_loss: 1 (the discriminator's last normalised map needs 2x2 positions)")
    _check(cfg.test.resize_size >= 16 and cfg.test.resize_size % 8 == 0, path, "test.resize_size",
           "must be a multiple of 8, >= 16")
    _check(t.epoches >= 1, path, "train.epoches", "must be >= 1")
    _check(t.save_chkp_n_epoches >= 1, path, "train.save_chkp_n_epoches", "must be >= 1")
    _check(t.D.update_n_batches >= 1, path, "train.D.update_n_batches", "must be >= 1")
    for name, sched in (("D", t.D.scheduler), ("G", t.G.scheduler)):
        _check(sched.start_lr > 0 and sched.end_lr > 0, path, f"train.{name}.scheduler", "learning rates must be > 0")
        _check(sched.step_size_up >= 1, path, f"train.{name}.scheduler.step_size_up", "must be >= 1")
    _check(t.optimizer.weight_decay >= 0, path, "train.optimizer.weight_decay", "must be >= 0")
    for key, value in dataclasses.asdict(t.logging).items():
        _check(value >= 1, path, f"train.logging.{key}", "must be >= 1")
    for key, value in dataclasses.asdict(cfg.test.logging).items():
        _check(value >= 1, path, f"test.logging.{key}", "must be >= 1")
    for key, value in dataclasses.asdict(t.losses).items():
        _check(value >= 0, path, f"train.losses.{key}", "must be >= 0")
    m = cfg.model
    _check(m.base_width >= 1 and m.aspp_channels >= 1 and m.disc_width >= 1, path, "model", "widths must be >= 1")
    _check(len(m.layers) == 4 and all(n >= 1 for n in m.layers), path, "model.layers",
           "must list 4 block counts >= 1")
