"""What one training run is: its settings, the log of each epoch, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from gadms.config import OptimizerConfig
from gadms.model.step import Mode
from gadms.train.param_groups import GroupRule


@dataclass(frozen=True)
class RunSettings:
    """What one training run does (built from params.yaml by :mod:`gadms.train.recipes`)."""

    mode: Mode
    epochs: int
    batch_size: int
    optimizer: OptimizerConfig
    warmup_epochs: int
    schedule: str = "cosine"
    grad_clip: float = 0.0
    grad_accumulation: int = 1
    amp: bool = True
    num_workers: int = 0
    sampler: str = "random"  # random | identity
    instances: int = 2
    mlm_probability: float = 0.15
    seed: int = 0
    lr_step: str = "step"  # step | epoch: how often the schedule advances
    checkpoint_every_steps: int = 0  # 0: only after each epoch
    groups: GroupRule = GroupRule()  # per-parameter lr factors and bias decay (fine-tuning: IRRA's rule)


@dataclass
class EpochLog:
    """Mean losses, last learning rate and throughput of one epoch."""

    epoch: int
    losses: dict[str, float]
    lr: float
    samples_per_s: float
    seconds: float
    scores: torch.Tensor | None = field(default=None, repr=False)  # token scores of the epoch's last batch
    tokens: torch.Tensor | None = field(default=None, repr=False)


def warmup_cosine(total_steps: int, warmup_steps: int, schedule: str = "cosine") -> Callable[[int], float]:
    """LR factor: linear warm-up from 0.1 to 1 over ``warmup_steps``, then cosine to 0 (or constant)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.1 + 0.9 * step / max(warmup_steps, 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
