"""ImageNet weights for torchvision backbones, without network access.

A backbone starts from the file the user names, else from torchvision's own file in the torch hub cache
(what an earlier ``weights=...`` download left there, or a file copied in by hand), else from random
initialisation, said once per backbone per process. Nothing is downloaded: training machines often
have no network, and a silent download would make a run depend on one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from shared.errors import DataError

# torchvision's ImageNet file names, as torch.hub caches them (IMAGENET1K_V1 first, then V2).
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
    "resnet152": ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"),
    "vgg16": ("vgg16-397923af.pth",),
    "mobilenet_v3_large": ("mobilenet_v3_large-8738ca79.pth", "mobilenet_v3_large-5c1a4163.pth"),
}
RANDOM = "random"  # what load_torchvision_weights returns when no file was found
_said_random: set[str] = set()


def hub_checkpoints_dir() -> Path:
    """``<torch hub dir>/checkpoints``; read at call time so ``TORCH_HOME`` and ``torch.hub.set_dir`` apply."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(file_names: Sequence[str], path: str | os.PathLike | None = None) -> Path | None:
    """``path`` when given (it must exist), else the first of ``file_names`` in the hub cache, else None."""
    if path is not None and str(path) != "":
        file = Path(path)
        if not file.is_file():
            raise DataError(f"{file}: pretrained weights file not found")
        return file
    for name in file_names:
        cached = hub_checkpoints_dir() / name
        if cached.is_file():
            return cached
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (plain, or under ``state_dict``/``model``), ``module.`` prefixes dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"{path}: not a readable weights file ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    tensors = {str(k).removeprefix("module."): v for k, v in state.items()
               if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise DataError(f"{path}: not a state dict of tensors")
    return tensors


def say_random_init(what: str, file_names: Sequence[str] = ()) -> None:
    """One line on stderr, once per ``what`` per process: the backbone starts from random weights."""
    if what in _said_random:
        return
    _said_random.add(what)
    looked = f" and none of {', '.join(file_names)} in {hub_checkpoints_dir()}" if file_names else ""
    print(f"note: {what} is randomly initialised: no pretrained weights file given{looked}", file=sys.stderr)


def load_torchvision_weights(module: nn.Module, file_names: Sequence[str], path: str | os.PathLike | None = None,
                             what: str = "backbone", ignore: Sequence[str] = (), quiet: bool = False) -> str:
    """Load ``path`` or the hub cache's file into ``module``; return the file used, or :data:`RANDOM`.

    Every key of ``module`` must be in the file with its shape, and every key of the file in ``module``,
    except keys starting with one of ``ignore`` (a classifier head, say): a wrong file is refused in one
    line instead of leaving half the network random. ``quiet`` skips the random-initialisation note.
    """
    file = find_weights(file_names, path)
    if file is None:
        if not quiet:
            say_random_init(what, file_names)
        return RANDOM
    skip = tuple(ignore)
    state = {k: v for k, v in read_state_dict(file).items() if not (skip and k.startswith(skip))}
    own = {k: v for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[:3]
        raise DataError(f"{file}: not {what} weights ({len(missing)} missing, {len(unexpected)} unexpected, "
                        f"{len(wrong)} wrongly shaped keys, e.g. {', '.join(example)})")
    module.load_state_dict(state, strict=not skip)
    return str(file)
