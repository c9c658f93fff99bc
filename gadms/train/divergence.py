"""Stopping a run that diverged: a loss term, gradient or weight that is not finite (or so large that using it
overflows) ends training at once with :class:`TrainingDiverged`, one line naming the step and the last good
checkpoint; nothing is written from such weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LARGEST_WEIGHT = 1e19  # about sqrt of float32's largest value: a weight past it overflows when squared


class TrainingDiverged(ValueError):
    """A loss term, gradient or weight became infinite or NaN; the message is one line naming the step."""


def diverged(checkpoint: Path, where: str, what: str) -> TrainingDiverged:
    """The error for a run that diverged ``where`` (``what`` is not finite), naming what was kept.

    Args:
        checkpoint: the run's checkpoint file (kept as it was, if there is one).
        where: the step, e.g. ``"at epoch 2, batch 3 (step 9)"``.
        what: what is not finite.

    Returns:
        The error to raise.
    """
    kept = f"last good checkpoint kept: {checkpoint}" if checkpoint.is_file() else "no checkpoint was written"
    advice = "lower the learning rate or check the data"
    return TrainingDiverged(f"training diverged {where}: {what}; stopped, {kept} ({advice})")


def check_losses(losses: dict[str, torch.Tensor], total: torch.Tensor, where: str, checkpoint: Path) -> None:
    """Raise at the first non-finite loss term (or a total that overflows)."""
    named = {**losses, "total loss": total}
    values = torch.stack([v.detach().float().reshape(()) for v in named.values()])
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise diverged(checkpoint, where, f"{list(named)[first]} is {float(values[first])}")


def check_gradients(norm: torch.Tensor, where: str, checkpoint: Path) -> None:
    """Raise when the gradient norm of the total loss is not finite."""
    if not bool(torch.isfinite(norm)):
        raise diverged(checkpoint, where, f"gradient norm of the total loss is {float(norm)}")


def unusable_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> list[str]:
    """Weights holding inf, NaN or a value past :data:`LARGEST_WEIGHT`, then optimiser state that is not finite.

    One device sync. A step at a huge learning rate can leave weights of 1e30: finite, yet every product
    with them overflows, so they count as not finite here.
    """
    named = [(n, t.detach()) for n, t in model.state_dict().items() if t.is_floating_point() and t.numel()]
    checks = [t.abs().amax() <= LARGEST_WEIGHT for _, t in named]  # amax keeps a NaN, which compares False
    for index, slots in enumerate(optimizer.state.values()):
        for key, value in slots.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
                named.append((f"optimizer state {key} of parameter {index}", value))
                checks.append(torch.isfinite(value).all())
    if not checks:
        return []
    flags = torch.stack([c.to(device) for c in checks]).tolist()  # Adam's step counts live on the CPU
    return [n for (n, _), ok in zip(named, flags, strict=True) if not ok]


def require_finite_weights(
    model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, where: str, checkpoint: Path
) -> None:
    """Raise :class:`TrainingDiverged` when a weight or the optimiser state is unusable (nothing is written)."""
    names = unusable_tensors(model, optimizer, device)
    if names:
        raise diverged(
            checkpoint,
            where,
            f"weights are not finite ({len(names)} tensor(s) hold inf, NaN or values past 1e19, e.g. {names[0]})",
        )
