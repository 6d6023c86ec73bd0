"""Mixed precision: autocast per device, a GradScaler only where fp16 needs one, safe steps.

``MixedPrecision.backward_and_step`` is the one place a training step goes through:
scale → backward → unscale → clip → step → update. A step whose loss or gradient norm is not finite
is skipped and counted rather than written into the weights; a run of them raises, because by then
the run is diverging and continuing only burns GPU hours.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from shared.errors import ConfigError

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


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
    """

    def __init__(
        self,
        precision: str = "fp32",
        device: torch.device | str = "cpu",
        max_consecutive_nonfinite: int = 20,
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

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def _skip(self, optimizer: torch.optim.Optimizer, reason: str) -> StepResult:
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.consecutive_nonfinite += 1
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"{self.consecutive_nonfinite} consecutive steps with non-finite {reason}; "
                "training diverged (lower the learning rate, or try bf16/fp32)"
            )
        return StepResult(stepped=False, grad_norm=None)

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
        if not torch.isfinite(loss.detach()).all():
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
