"""Mixed precision: autocast per device, a GradScaler only where fp16 needs one, safe steps.

``MixedPrecision.backward_and_step`` is the one place a training step goes through:
scale → backward → unscale → clip → step → update. A step whose loss or gradient norm is not finite
is skipped, counted and logged rather than written into the weights; a run of them raises
:class:`NonFiniteError`, because by then the run is diverging and continuing only burns GPU hours.

What a loop does when that happens (:func:`diverged`): write the state of the last step that went
through to ``latest.pth`` — skipped steps never touched the weights — provided every tensor in it is
finite, and stop with a one-line message and exit status 3 (``shared.errors.EXIT_DIVERGED``). A state
that is itself not finite (an optimizer step can overflow the weights; a forward pass can poison
normalisation statistics) is never written: :func:`ensure_finite` guards the end-of-epoch saves too,
so ``latest.pth`` always holds finite numbers.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from shared import distributed
from shared.errors import EXIT_DIVERGED, ConfigError, TrainingStopped

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteError(TrainingStopped):
    """Training diverged: too many consecutive steps had a non-finite loss or gradient.

    Not a ``RuntimeError``: an out-of-memory handler catching those must not swallow it.
    """

    exit_status = EXIT_DIVERGED


@dataclass(frozen=True)
class StepResult:
    stepped: bool
    grad_norm: float | None


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``device`` at ``precision``; a no-op for fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


class MixedPrecision:
    """Autocast + (when needed) GradScaler + non-finite step guard, for one optimizer.

    GANs use one instance per optimizer, so each keeps its own loss scale.

    ``modules`` are the models whose buffers a skipped step must not leave poisoned: the forward pass of
    a diverging step has already folded its Inf/NaN activations into BatchNorm running statistics
    before the loss is seen, and one NaN there makes every later evaluation NaN. On a skipped step,
    those of their floating-point buffers that are no longer finite are put back to their values after
    the last step that went through. A GAN passes both models to both instances, since G's step runs
    D's forward too.
    """

    def __init__(
        self,
        precision: str = "fp32",
        device: torch.device | str = "cpu",
        max_consecutive_nonfinite: int = 20,
        modules: Iterable[nn.Module] = (),
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.device = torch.device(device)
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        # bf16 has fp32's exponent range and needs no loss scaling; fp16 on CPU/MPS runs unscaled too,
        # since GradScaler's fused unscale kernels are CUDA-only.
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and self.device.type == "cuda" else None
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0
        self.modules = [m for m in modules if m is not None]
        self._good_buffers: list[torch.Tensor] | None = None

    def _buffers(self) -> list[torch.Tensor]:
        # Looked up on every call: ``.to(device)`` replaces buffer tensors, a checkpoint load does not.
        seen: set[int] = set()
        found = []
        for module in self.modules:
            for buffer in module.buffers():
                if buffer.is_floating_point() and id(buffer) not in seen:
                    seen.add(id(buffer))
                    found.append(buffer)
        return found

    def _remember_buffers(self) -> None:
        if not self.modules:
            return
        buffers = self._buffers()
        with torch.no_grad():
            shapes = [b.shape for b in buffers]
            if self._good_buffers is None or shapes != [g.shape for g in self._good_buffers]:
                self._good_buffers = [b.detach().clone() for b in buffers]
            else:
                for good, buffer in zip(self._good_buffers, buffers, strict=True):
                    good.copy_(buffer)

    def _repair_buffers(self) -> None:
        if self._good_buffers is None:
            return  # nothing went through yet: nothing finite to go back to (ensure_finite guards saves)
        buffers = self._buffers()
        if not buffers or len(buffers) != len(self._good_buffers):
            return
        finite = torch.stack([torch.isfinite(b).all() for b in buffers]).tolist()  # one device sync
        with torch.no_grad():
            for good, buffer, ok in zip(self._good_buffers, buffers, finite, strict=True):
                if not ok:
                    buffer.copy_(good)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def _skip(self, optimizer: torch.optim.Optimizer, reason: str) -> StepResult:
        optimizer.zero_grad(set_to_none=True)
        self._repair_buffers()
        self.skipped_steps += 1
        self.consecutive_nonfinite += 1
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            hint = "lower the learning rate" + (", or train in bf16/fp32" if self.precision == "fp16" else "")
            raise NonFiniteError(
                f"training diverged: {self.consecutive_nonfinite} consecutive steps with non-finite {reason} "
                f"({self.skipped_steps} skipped in all; {hint})"
            )
        if distributed.is_main_process():
            # A leading newline so that the line does not land inside a progress bar.
            print(f"\nwarning: skipped a step with non-finite {reason} ({self.consecutive_nonfinite} in a "
                  f"row, {self.skipped_steps} in all; training stops after {self.max_consecutive_nonfinite} "
                  "in a row)", file=sys.stderr, flush=True)
        return StepResult(stepped=False, grad_norm=None)

    @staticmethod
    def _finite_everywhere(loss: torch.Tensor) -> bool:
        # Under DDP a rank that skipped backward alone would leave the others waiting in the gradient
        # all-reduce until the timeout: every rank skips, or none does.
        return not _on_any_rank(not bool(torch.isfinite(loss.detach()).all()))

    def backward_and_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[nn.Parameter] | None = None,
        max_grad_norm: float | None = None,
        zero_grad: bool = True,
    ) -> StepResult:
        """Backward ``loss`` and step ``optimizer``; skip the step if anything is not finite.

        ``parameters`` (default: the optimizer's) are the ones clipped to ``max_grad_norm``.
        Gradients are zeroed afterwards unless ``zero_grad=False``.
        """
        if not self._finite_everywhere(loss):
            return self._skip(optimizer, "loss")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
        params = (
            list(parameters)
            if parameters is not None
            else [p for group in optimizer.param_groups for p in group["params"]]
        )
        grads = [p for p in params if p.grad is not None]
        if max_grad_norm is not None and max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(grads, max_grad_norm))
        else:
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in grads])) if grads else 0.0
        if not math.isfinite(norm):
            if self.scaler is not None:
                # Let the scaler see the inf and lower its scale, as it would have without us.
                self.scaler.step(optimizer)
                self.scaler.update()
            return self._skip(optimizer, "gradients")
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        self.consecutive_nonfinite = 0
        self._remember_buffers()
        return StepResult(stepped=True, grad_norm=norm)

    def state_dict(self) -> dict:
        return {
            "precision": self.precision,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))


def _on_any_rank(flag: bool) -> bool:
    """``flag`` OR-ed over all ranks (just ``flag`` in a single process), so that every rank decides alike."""
    if not distributed.is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=distributed.collective_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _state_problem(state: Mapping[str, Any]) -> str | None:
    """What is not finite in ``state`` on this rank or, under DDP, on another (BatchNorm statistics are
    per rank); ``None`` when it is finite everywhere. Every rank must call this at the same point."""
    bad = nonfinite_entries(state.get("state", state))
    if not _on_any_rank(bool(bad)):
        return None
    return f"{len(bad)} tensors, e.g. {bad[0]}" if bad else "on another rank"


def nonfinite_entries(tree: Any, prefix: str = "") -> list[str]:
    """Paths (``state/model/conv.weight``) of the floating-point tensors in ``tree`` holding a NaN or Inf."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            return [] if bool(torch.isfinite(tree).all()) else [prefix or "tensor"]
        return []
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    found = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}/{key}" if prefix else str(key))
    return found


def ensure_finite(state: Mapping[str, Any], where: str, path: str | os.PathLike) -> None:
    """Raise :class:`NonFiniteError` instead of letting a non-finite ``state`` overwrite ``path``.

    Loops call this on every rank before their end-of-epoch save, so ``latest.pth`` keeps the last
    finite state.
    """
    problem = _state_problem(state)
    if problem:
        raise NonFiniteError(f"training diverged: the training state is not finite at {where} ({problem}); "
                             f"{_kept(path)}")


def diverged(error: NonFiniteError, state: Mapping[str, Any], path: str | os.PathLike) -> NonFiniteError:
    """Save the last good ``state`` to ``path`` after ``error``; return the error for the loop to raise.

    ``state`` is the training state as it is now: the weights and optimizer of the last step that went
    through, since a skipped step changes neither. The main process writes it if every tensor in it is
    finite, and the other ranks wait for that write so that none exits (and makes ``torchrun`` kill the
    writer) while it is under way. The returned error's message says what was saved.
    """
    from shared.checkpoint import save_checkpoint

    problem = _state_problem(state)
    if problem:
        note = f"the current state is not finite ({problem}), so {_kept(path)}"
    else:
        if distributed.is_main_process():
            save_checkpoint(path, state)
        distributed.barrier()
        note = f"saved the last good state to {path}"
    return NonFiniteError(f"{error}; {note}")


def _kept(path: str | os.PathLike) -> str:
    if Path(path).exists():
        return f"{path} was left as it was (the last finite state saved)"
    return f"no checkpoint was written ({path} does not exist)"
