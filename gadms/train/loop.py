"""The training loop shared by pre-training (GA-DMS) and fine-tuning (IRRA-style).

Adam with warm-up then cosine decay (per optimiser step, or per epoch), gradient
accumulation and clipping, mixed precision on CUDA, a checkpoint after every
epoch (weights, optimiser, scheduler, scaler, RNG states) written atomically,
and exact resumption. Under torchrun it wraps the step in DDP and computes
SDM over the global batch. A non-finite loss term or gradient stops the run
at once with :class:`TrainingDiverged` (the checkpoint of the last good epoch
stays as it was); no checkpoint or model with non-finite weights is written.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from gadms.config import LossConfig, ModelConfig, OptimizerConfig
from gadms.data.pipeline import EpochSampler, IdentitySampler, PairDataset
from gadms.model.files import ModelFileError, read_torch_file, require_entries
from gadms.model.retrieval import Architecture, PersonRetrievalModel, non_finite_weights, save_model
from gadms.model.step import Mode, TrainingStep
from gadms.shards import atomic_path
from gadms.train import distributed

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.safetensors"
_CHECKPOINT_ENTRIES = (
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "step_generator",
    "torch_rng",
    "architecture",
)


class TrainingDiverged(ValueError):
    """A loss term, gradient or weight became infinite or NaN; the message is one line naming the step."""


@dataclass(frozen=True)
class RunSettings:
    """What one training run does (built from params.yaml by :mod:`gadms.train.runs`)."""

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


class _StepModule(nn.Module):
    """Makes the training step a module forward so DDP can hook it."""

    def __init__(self, model: PersonRetrievalModel, step: TrainingStep):
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, images, tokens, identities, partners=None, indices=None, epoch=0):
        out = self.step(self.model, images, tokens, identities, partners, indices, epoch)
        return out.total, out.losses, out.scores


def _worker_context(num_workers: int) -> str | None:
    """How to start loader workers: fork normally; forkserver when other threads run (an orchestrator's engine,
    MLflow's logging), since a forked child can inherit their locks held and die."""
    if num_workers == 0 or threading.active_count() == 1 or sys.platform != "linux":
        return None
    return "forkserver"


class Trainer:
    """Trains ``model`` on ``dataset`` and checkpoints into ``out_dir``.

    Args:
        model: the model (already holding pre-trained weights if any).
        dataset: pairs to train on.
        settings: mode, schedule, sizes.
        model_cfg: masking and GASS settings.
        loss_cfg: loss switches and weights.
        out_dir: where ``checkpoint.pt`` and ``model.safetensors`` go.
        device: ``auto``, ``cpu``, ``cuda``, ...
        progress: show a progress bar (main process only).
        on_epoch: called with each :class:`EpochLog` on the main process (e.g. MLflow logging).
    """

    def __init__(
        self,
        model: PersonRetrievalModel,
        dataset: PairDataset,
        settings: RunSettings,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        out_dir: Path,
        device: str = "auto",
        progress: bool = True,
        on_epoch: Callable[[EpochLog], None] | None = None,
    ):
        self.model, self.dataset, self.settings = model, dataset, settings
        self.out_dir = Path(out_dir)
        self.dist = distributed.init_distributed(device)
        self.step = TrainingStep(
            model_cfg, loss_cfg, settings.mode, settings.mlm_probability, seed=settings.seed + self.dist.rank
        )
        if self.dist.enabled:
            self.step.gather, self.step.gather_ids = distributed.gather_with_grad, distributed.gather_no_grad
        self.progress = progress and self.dist.is_main
        self.on_epoch = on_epoch
        self.model.to(self.dist.device)
        s = settings
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=s.optimizer.lr,
            betas=s.optimizer.betas,
            eps=s.optimizer.eps,
            weight_decay=s.optimizer.weight_decay,
        )
        self.sampler = self._sampler()
        steps_per_epoch = max(1, len(self.sampler) // self._micro_batch() // s.grad_accumulation)
        if s.lr_step == "epoch":  # the schedule counts epochs
            steps_per_epoch = 1
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(steps_per_epoch * s.epochs, steps_per_epoch * s.warmup_epochs, s.schedule)
        )
        self.use_amp = s.amp and self.dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        module = _StepModule(model, self.step)
        self.runner: nn.Module = (
            DistributedDataParallel(
                module,
                find_unused_parameters=True,
                device_ids=[self.dist.device] if self.dist.device.type == "cuda" else None,
            )
            if self.dist.enabled
            else module
        )

    def _micro_batch(self) -> int:
        """Per-process batch: the global batch split over ranks and accumulation steps."""
        s = self.settings
        per_rank = s.batch_size // (self.dist.world_size * s.grad_accumulation)
        if per_rank < 1:
            raise ValueError(f"train.batch_size {s.batch_size} is smaller than processes x grad_accumulation")
        return per_rank

    def _sampler(self):
        s, d = self.settings, self.dist
        if s.sampler == "identity":
            ids = [p.identity for p in self.dataset.pairs]
            return IdentitySampler(ids, self._micro_batch(), s.instances, s.seed, d.rank, d.world_size)
        return EpochSampler(len(self.dataset), s.seed, d.rank, d.world_size)

    # -- checkpoints -------------------------------------------------------------

    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step_generator": self.step.generator.get_state(),
            "score_memory": self.step.memory.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "architecture": json.dumps(asdict(self.model.arch), sort_keys=True),
        }

    def save_checkpoint(self, epoch: int) -> Path:
        """Write ``checkpoint.pt`` atomically (main process only); refused when a weight is not finite."""
        self._require_finite_weights(f"after epoch {epoch + 1}")
        path = self.out_dir / CHECKPOINT
        with atomic_path(path) as tmp:
            torch.save(self._state(epoch), tmp)
        return path

    def load_checkpoint(self) -> int:
        """Restore everything from ``checkpoint.pt``; returns the next epoch to run (0 if none)."""
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return 0
        state = require_entries(read_torch_file(path), path, _CHECKPOINT_ENTRIES, "gadms training checkpoint")
        if Architecture.from_json(state["architecture"], path) != self.model.arch:  # older files: defaults fill in
            raise ValueError(
                f"{path}: checkpoint was made for another architecture; use a new --out or matching params"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step.generator.set_state(state["step_generator"])
            if "score_memory" in state:
                self.step.memory.load_state_dict(state["score_memory"])
            torch.set_rng_state(state["torch_rng"])
            return int(state["epoch"]) + 1
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            advice = "use a new --out or matching params"
            raise ModelFileError(f"{path}: checkpoint does not fit this run ({reason}); {advice}") from None

    # -- the loop ----------------------------------------------------------------

    def fit(self, resume: bool = False, stop_after: int | None = None) -> list[EpochLog]:
        """Train the remaining epochs; returns their logs and writes the final model.

        Args:
            resume: continue from ``checkpoint.pt`` in ``out_dir`` if there is one.
            stop_after: return after this many epochs in total (as if interrupted
                right after that epoch's checkpoint); the final model is not written.
        """
        start = self.load_checkpoint() if resume else 0
        history = []
        last = self.settings.epochs if stop_after is None else min(stop_after, self.settings.epochs)
        for epoch in range(start, last):
            history.append(self._epoch(epoch))
            if self.dist.is_main:
                self.save_checkpoint(epoch)
                if self.on_epoch is not None:
                    self.on_epoch(history[-1])
            if self.dist.enabled:
                torch.distributed.barrier()
        if self.dist.is_main and last == self.settings.epochs:
            self._require_finite_weights("at the end of training")
            save_model(self.model, self.out_dir / FINAL_MODEL)
        return history

    # -- divergence ----------------------------------------------------------------

    def _last_good(self) -> str:
        path = self.out_dir / CHECKPOINT
        return f"last good checkpoint kept: {path}" if path.is_file() else "no checkpoint was written"

    def _diverged(self, where: str, what: str) -> TrainingDiverged:
        advice = "lower the learning rate or check the data"
        return TrainingDiverged(f"training diverged {where}: {what}; stopped, {self._last_good()} ({advice})")

    def _check_losses(self, losses: dict[str, torch.Tensor], total: torch.Tensor, where: str) -> None:
        """Raise at the first non-finite loss term (or a total that overflows)."""
        named = {**losses, "total loss": total}
        values = torch.stack([v.detach().float().reshape(()) for v in named.values()])
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise self._diverged(where, f"{list(named)[first]} is {float(values[first])}")

    def _check_gradients(self, norm: torch.Tensor, where: str) -> None:
        if not bool(torch.isfinite(norm)):
            raise self._diverged(where, f"gradient norm of the total loss is {float(norm)}")

    def _require_finite_weights(self, where: str) -> None:
        names = non_finite_weights(self.model)
        if names:
            raise self._diverged(where, f"{len(names)} weight tensor(s) are not finite, e.g. {names[0]}")

    def _epoch(self, epoch: int) -> EpochLog:
        s = self.settings
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        micro = self._micro_batch()
        loader = DataLoader(
            self.dataset,
            batch_size=micro,
            sampler=self.sampler,
            num_workers=s.num_workers,
            drop_last=len(self.sampler) >= micro,
            pin_memory=self.dist.device.type == "cuda",
            multiprocessing_context=_worker_context(s.num_workers),
        )
        sums: dict[str, float] = {}
        count, seen = 0, 0
        started = time.perf_counter()
        bar = tqdm(
            loader, desc=f"{s.mode} epoch {epoch + 1}/{s.epochs}", unit="batch", disable=not self.progress, leave=False
        )
        scores = tokens_seen = None
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, tokens, identities, indices, *partners) in enumerate(bar):
            images = images.to(self.dist.device, non_blocking=True)
            tokens = tokens.to(self.dist.device, non_blocking=True)
            identities = identities.to(self.dist.device, non_blocking=True)
            partner = partners[0].to(self.dist.device, non_blocking=True) if partners else None  # TIC's second captions
            with torch.autocast(self.dist.device.type, dtype=torch.float16, enabled=self.use_amp):
                indices = indices.to(self.dist.device)
                total, losses, scores = self.runner(images, tokens, identities, partner, indices, epoch)
            where = f"at epoch {epoch + 1}, batch {i + 1} (step {epoch * len(loader) + i + 1})"
            self._check_losses(losses, total, where)
            self.scaler.scale(total / s.grad_accumulation).backward()
            if (i + 1) % s.grad_accumulation == 0:
                self._optimizer_step(where)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            seen += len(images) * self.dist.world_size
            tokens_seen = tokens
            if self.progress:
                rate = seen / (time.perf_counter() - started)
                bar.set_postfix(
                    loss=f"{float(total.detach()):.3f}",
                    lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                    samples_s=f"{rate:.0f}",
                )
        bar.close()
        seconds = time.perf_counter() - started
        log = EpochLog(
            epoch,
            {k: v / max(count, 1) for k, v in sums.items()},
            float(self.scheduler.get_last_lr()[0]),
            seen / max(seconds, 1e-9),
            seconds,
            None if scores is None else scores.detach().cpu(),
            None if tokens_seen is None else tokens_seen.cpu(),
        )
        if self.progress:
            losses_text = "  ".join(f"{k} {v:.4f}" for k, v in log.losses.items())
            tqdm.write(
                f"{s.mode} epoch {epoch + 1}/{s.epochs}: {losses_text}  lr {log.lr:.2e}  {log.samples_per_s:.1f} "
                "samples/s"
            )
        if s.lr_step == "epoch":
            self.scheduler.step()
        return log

    def _optimizer_step(self, where: str) -> None:
        """Clip, check and apply the gradients. Under AMP the scaler skips steps with overflowing gradients
        itself (that is how it finds its scale), so only the loss is checked there."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        elif not self.use_amp:
            norm = nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if not self.use_amp:
            self._check_gradients(norm, where)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.settings.lr_step == "step":
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
