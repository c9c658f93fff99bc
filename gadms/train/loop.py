"""The training loop shared by pre-training (GA-DMS) and fine-tuning (IRRA-style).

Adam with warm-up then cosine decay (per optimiser step, or per epoch), gradient
accumulation and clipping, mixed precision on CUDA, a checkpoint after every
epoch and every ``checkpoint_every_steps`` optimiser steps (weights, optimiser,
scheduler, scaler, every rank's RNG states and input position; the score memory
as one copy of its file beside it) written atomically, and exact resumption, also mid-epoch. Under torchrun it
wraps the step in DDP and computes SDM over the global batch. The input is an
in-memory dataset or a stream of shards (:mod:`gadms.train.feed`). A non-finite loss term or gradient stops the run
at once with :class:`~gadms.train.divergence.TrainingDiverged` (the checkpoint of the last good epoch
stays as it was); no checkpoint or model is written whose weights (or optimiser state) are not finite, nor
one whose weights are so large (past :data:`gadms.train.divergence.LARGEST_WEIGHT`) that using them overflows
(:mod:`gadms.train.divergence`). The run's settings and per-epoch log are in :mod:`gadms.train.settings`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from gadms.config import LossConfig, ModelConfig
from gadms.data.pipeline import PairDataset
from gadms.data.shardplan import steps_per_epoch as stream_steps
from gadms.data.streaming import StreamingPairs
from gadms.model.files import ModelFileError, read_torch_file
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.model.score_memory import drop_stale_copies, prepare_store, store_path
from gadms.model.step import StepModule, TrainingStep
from gadms.reproducible_writes import atomic_path
from gadms.train import distributed, threads
from gadms.train.checkpoint_checks import check_resume_settings, checked_checkpoint, failure_reason, rank_entry
from gadms.train.divergence import check_gradients, check_losses, require_finite_weights
from gadms.train.feed import MemoryFeed, StreamFeed
from gadms.train.param_groups import param_groups
from gadms.train.settings import EpochLog, RunSettings, warmup_cosine

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.safetensors"

logger = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised inside the loop when ``stop_after_steps`` is reached (a simulated kill after a checkpoint)."""


class Trainer:
    """Trains ``model`` on ``dataset`` and checkpoints into ``out_dir``.

    Args:
        model: the model (already holding pre-trained weights if any).
        dataset: pairs to train on: in memory, or a stream of shards.
        settings: mode, schedule, sizes.
        model_cfg: masking and GASS settings.
        loss_cfg: loss switches and weights.
        out_dir: where ``checkpoint.pt`` and ``model.safetensors`` go.
        device: ``auto``, ``cpu``, ``cuda``, ...
        progress: show a progress bar (main process only).
        on_epoch: called with each :class:`EpochLog` on the main process (e.g. MLflow logging).
        record: the result-shaping settings by params key (:func:`gadms.train.recipes.resume_settings`), kept in
            the checkpoint with the number of pairs trained on; ``--resume`` refuses a change of any of them.
    """

    def __init__(
        self,
        model: PersonRetrievalModel,
        dataset: PairDataset | StreamingPairs,
        settings: RunSettings,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        out_dir: Path,
        device: str = "auto",
        progress: bool = True,
        on_epoch: Callable[[EpochLog], None] | None = None,
        record: dict[str, Any] | None = None,
    ):
        self.model, self.dataset, self.settings = model, dataset, settings
        pairs = dataset.total_pairs if isinstance(dataset, StreamingPairs) else len(dataset)
        self.record = {**(record or {}), "data.pairs": pairs}
        self.out_dir = Path(out_dir)
        self.dist = distributed.init_distributed(device)
        threads.use_cores(announce=progress and self.dist.is_main)  # no more threads than cores this process may use
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
            param_groups(model, s.optimizer.lr, s.optimizer.weight_decay, s.groups),
            lr=s.optimizer.lr,
            betas=s.optimizer.betas,
            eps=s.optimizer.eps,
            weight_decay=s.optimizer.weight_decay,
        )
        self.feed = self._feed()
        self.steps_per_epoch = max(1, self.feed.batches // s.grad_accumulation)  # known before reading any image
        ticks = 1 if s.lr_step == "epoch" else self.steps_per_epoch  # what the schedule counts per epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(ticks * s.epochs, ticks * s.warmup_epochs, s.schedule)
        )
        self.stop_after_steps: int | None = None
        self.use_amp = s.amp and self.dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        module = StepModule(model, self.step)
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

    def _feed(self) -> MemoryFeed | StreamFeed:
        s, d = self.settings, self.dist
        pin = d.device.type == "cuda"
        micro = self._micro_batch()
        if isinstance(self.dataset, StreamingPairs):
            global_batch = micro * d.world_size * s.grad_accumulation
            batches = stream_steps(self.dataset.total_pairs, global_batch) * s.grad_accumulation
            return StreamFeed(self.dataset, micro, batches, d.rank, d.world_size, s.num_workers, s.seed, pin)
        return MemoryFeed(self.dataset, s.sampler, s.instances, micro, d.rank, d.world_size, s.num_workers, s.seed, pin)

    # -- checkpoints -------------------------------------------------------------

    def _rank_state(self) -> dict:
        """What differs between ranks: RNG states and the input position."""
        return {
            "step_generator": self.step.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "feed": self.feed.position,
        }

    def _state(self, epoch: int, batch: int | None, partial: dict | None) -> dict:
        ranks: list = [self._rank_state()]
        if self.dist.enabled:
            ranks = [None] * self.dist.world_size
            torch.distributed.all_gather_object(ranks, self._rank_state())
        return {
            "epoch": epoch,
            "batch": batch,  # micro-batches of `epoch` done; None: the epoch is complete
            "partial": partial,  # the epoch's running loss sums (mid-epoch)
            "world_size": self.dist.world_size,
            "ranks": ranks,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "architecture": self.model.arch.to_json(),
            "settings": self.record,  # what --resume must find unchanged
        }

    def save_checkpoint(self, epoch: int, batch: int | None = None, partial: dict | None = None) -> Path:
        """Write ``checkpoint.pt`` atomically; refused when a weight is not finite.

        Collective under DDP: every rank calls it (their RNG states and stream positions are gathered), the
        main one writes.

        Args:
            epoch: the epoch being trained (complete when ``batch`` is None).
            batch: micro-batches of ``epoch`` done, for a mid-epoch checkpoint.
            partial: the epoch's running sums, for a mid-epoch checkpoint.

        Returns:
            The checkpoint path.
        """
        done = self.feed.batches if batch is None else batch
        step = f"step {epoch * self.feed.batches + done}"  # counted in batches, as the loss checks count them
        where = (
            f"after epoch {epoch + 1} ({step})" if batch is None else f"at epoch {epoch + 1}, batch {batch} ({step})"
        )
        self._require_finite_weights(where)
        path = self.out_dir / CHECKPOINT
        state = self._state(epoch, batch, partial)
        if self.dist.is_main:
            if self.step.memory.is_open:  # the node's score store, copied once beside the checkpoint
                state["score_memory"] = self.step.memory.save_copy(self.out_dir)
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            drop_stale_copies(self.out_dir, state.get("score_memory"))
        if self.dist.enabled:
            torch.distributed.barrier()  # also: no rank writes scores while the main one copies them
        return path

    def _open_scores(self, entry: dict | None) -> None:
        """Map the node's score store (``previous_epoch``): its first rank fills it, empty or from ``entry``."""
        if self.settings.mode != "gadms" or self.step.model_cfg.masking.score_timing != "previous_epoch":
            return
        path = store_path(self.out_dir)
        if self.dist.local_rank == 0:
            captions = self.dataset.total_pairs if isinstance(self.dataset, StreamingPairs) else len(self.dataset)
            prepare_store(path, captions, self.step.memory.width, entry, self.out_dir)
        if self.dist.enabled:
            torch.distributed.barrier()
        self.step.memory.open(path)

    def load_checkpoint(self) -> tuple[int, int, dict, dict | None]:
        """Restore everything from ``checkpoint.pt``.

        Returns:
            ``(epoch, batch, position, partial)``: where to go on (``(0, 0, {}, None)`` without a checkpoint).

        Raises:
            ModelFileError: one line naming the file and the entry that is missing, of the wrong type, or does not
                fit this run.
        """
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return 0, 0, {}, None
        state = checked_checkpoint(read_torch_file(path), path)
        if Architecture.from_json(state["architecture"], path) != self.model.arch:  # older files: defaults fill in
            raise ValueError(
                f"{path}: checkpoint was made for another architecture; use a new --out or matching params"
            )
        check_resume_settings(state.get("settings"), self.record, path)
        mine = rank_entry(state, path, self.dist.world_size, self.dist.rank)
        self._restore(state, mine, path)
        if state.get("batch") is None:
            return state["epoch"] + 1, 0, {}, None
        return state["epoch"], state["batch"], mine.get("feed") or {}, state["partial"]

    def _restore(self, state: dict, mine: dict, path: Path) -> None:
        """Load each entry into the run; whatever fails is one :class:`ModelFileError` naming the entry."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("model", lambda: self.model.load_state_dict(state["model"])),
            ("optimizer", lambda: self.optimizer.load_state_dict(state["optimizer"])),
            ("scheduler", lambda: self.scheduler.load_state_dict(state["scheduler"])),
            ("scaler", lambda: self.scaler.load_state_dict(state["scaler"])),
            ("step_generator", lambda: self.step.generator.set_state(mine["step_generator"])),
            ("torch_rng", lambda: torch.set_rng_state(mine["torch_rng"])),
        ]
        steps.append(("score_memory", lambda: self._open_scores(state.get("score_memory"))))
        for entry, restore in steps:
            try:
                restore()
            except Exception as exc:  # anything a malformed entry raises inside torch: one line, no traceback
                raise ModelFileError(
                    f"{path}: checkpoint entry {entry!r} does not fit this run ({failure_reason(exc)}); "
                    "use a new --out or matching params"
                ) from None

    # -- the loop ----------------------------------------------------------------

    def fit(
        self, resume: bool = False, stop_after: int | None = None, stop_after_steps: int | None = None
    ) -> list[EpochLog]:
        """Train the remaining epochs; returns their logs and writes the final model.

        Args:
            resume: continue from ``checkpoint.pt`` in ``out_dir`` if there is one (mid-epoch too).
            stop_after: return after this many epochs in total (as if interrupted
                right after that epoch's checkpoint); the final model is not written.
            stop_after_steps: return right after the checkpoint at this optimiser step (counted from the
                start of training), as if killed there; needs ``checkpoint_every_steps`` to divide it.
        """
        self.stop_after_steps = stop_after_steps
        try:
            start, batch, position, partial = self.load_checkpoint() if resume else (0, 0, {}, None)
            if not self.step.memory.is_open:  # no checkpoint read: an empty store
                self._open_scores(None)
            last = self.settings.epochs if stop_after is None else min(stop_after, self.settings.epochs)
            return self._fit_epochs(start, batch, position, partial, last)
        finally:
            self.step.memory.remove()

    def _fit_epochs(self, start: int, batch: int, position: dict, partial: dict | None, last: int) -> list[EpochLog]:
        """Epochs ``start`` to ``last`` (:meth:`fit`'s loop)."""
        history: list[EpochLog] = []
        for epoch in range(start, last):
            try:
                history.append(self._epoch(epoch, batch, position, partial))
            except _Stopped:
                return history
            batch, position, partial = 0, {}, None
            self.save_checkpoint(epoch)
            if self.dist.is_main and self.on_epoch is not None:
                self.on_epoch(history[-1])
        if self.dist.is_main and last == self.settings.epochs:
            self._require_finite_weights("at the end of training")
            save_model(self.model, self.out_dir / FINAL_MODEL)
        return history

    # -- divergence ----------------------------------------------------------------

    def _require_finite_weights(self, where: str) -> None:
        """Raise :class:`TrainingDiverged` when a weight or the optimiser state is unusable (nothing is written)."""
        require_finite_weights(self.model, self.optimizer, self.dist.device, where, self.out_dir / CHECKPOINT)

    def _epoch(self, epoch: int, start: int = 0, position: dict | None = None, partial: dict | None = None) -> EpochLog:
        s = self.settings
        self.model.train()
        partial = partial or {"sums": {}, "count": 0, "seen": 0, "seconds": 0.0}
        sums: dict[str, float] = dict(partial["sums"])
        count, seen = partial["count"], partial["seen"]
        started = time.perf_counter() - partial["seconds"]
        bar = tqdm(
            self.feed.epoch(epoch, start, position),
            desc=f"{s.mode} epoch {epoch + 1}/{s.epochs}",
            unit="batch",
            total=self.feed.batches,
            initial=start,
            disable=not self.progress,
            leave=False,
        )
        scores = tokens_seen = None
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, tokens, identities, indices, *partners) in enumerate(bar, start=start):
            images = images.to(self.dist.device, non_blocking=True)
            tokens = tokens.to(self.dist.device, non_blocking=True)
            identities = identities.to(self.dist.device, non_blocking=True)
            partner = partners[0].to(self.dist.device, non_blocking=True) if partners else None  # TIC's second captions
            with torch.autocast(self.dist.device.type, dtype=torch.float16, enabled=self.use_amp):
                indices = indices.to(self.dist.device)
                total, losses, scores = self.runner(images, tokens, identities, partner, indices, epoch)
            where = f"at epoch {epoch + 1}, batch {i + 1} (step {epoch * self.feed.batches + i + 1})"
            check_losses(losses, total, where, self.out_dir / CHECKPOINT)
            self.scaler.scale(total / s.grad_accumulation).backward()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            seen += len(images) * self.dist.world_size
            tokens_seen = tokens
            if (i + 1) % s.grad_accumulation == 0:
                self._optimizer_step(where)
                running = {"sums": sums, "count": count, "seen": seen, "seconds": time.perf_counter() - started}
                self._maybe_checkpoint(epoch, i + 1, running)
            if self.progress:
                rate = seen / (time.perf_counter() - started)
                bar.set_postfix(
                    loss=f"{float(total.detach()):.3f}",
                    lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                    samples_s=f"{rate:.0f}",
                )
        bar.close()
        self.feed.end_of_epoch(epoch)
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

    def _maybe_checkpoint(self, epoch: int, batch: int, partial: dict) -> None:
        """A mid-epoch checkpoint every ``checkpoint_every_steps`` optimiser steps (the epoch's end has its own)."""
        every = self.settings.checkpoint_every_steps
        step = epoch * self.steps_per_epoch + batch // self.settings.grad_accumulation
        if not every or step % every or batch >= self.feed.batches:
            return
        self.save_checkpoint(epoch, batch, partial)
        if self.stop_after_steps is not None and step >= self.stop_after_steps:
            raise _Stopped

    def _optimizer_step(self, where: str) -> None:
        """Clip, check and apply the gradients. Under AMP the scaler skips steps with overflowing gradients
        itself (that is how it finds its scale), so only the loss is checked there."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        elif not self.use_amp:
            norm = nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if not self.use_amp:
            check_gradients(norm, where, self.out_dir / CHECKPOINT)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.settings.lr_step == "step":
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
