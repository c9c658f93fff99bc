"""What the training loop reads batches from: an in-memory dataset or a stream, behind one interface.

Both know their batches per epoch before the epoch starts (the learning-rate
schedule is computed from it), start an epoch at any batch (mid-epoch
resumption) and report their position after the last batch handed out.
In-memory data (benchmarks, fine-tuning) uses the epoch samplers of
:mod:`gadms.data.pipeline`, whose order is a pure function of (seed, epoch),
so its position is just the batch number; a stream also returns each slot's
position (:mod:`gadms.data.streaming`).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import sys
import threading
from collections import Counter
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from gadms.data.pipeline import EpochSampler, IdentitySampler, PairDataset
from gadms.data.streaming import StreamingPairs, tally_from_dict
from gadms.lifetime import loader_worker_init

logger = logging.getLogger(__name__)


# What a loader worker needs to unpickle its dataset, imported once by the forkserver instead of by every worker of
# every epoch (the DataLoader starts its workers anew each epoch). Without it a demo pre-training epoch took about
# 19 s instead of 7.5 s on 2 cores, most of it a fresh worker importing torch, open_clip and the readers.
WORKER_MODULES = (
    "torch",
    "torchvision",
    "open_clip",
    "gadms.data.pipeline",
    "gadms.data.streaming",
    "gadms.model.backbone",
    "gadms.lifetime",
)


def worker_context(num_workers: int) -> str | None:
    """How to start loader workers: fork normally; forkserver when other threads run (an orchestrator's engine,
    MLflow's logging), since a forked child can inherit their locks held and die. The forkserver imports
    :data:`WORKER_MODULES` once when it starts (a server started earlier by other code keeps its own list)."""
    if num_workers == 0 or threading.active_count() == 1 or sys.platform != "linux":
        return None
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_MODULES))
    return "forkserver"


class _Skip(Sampler[int]):
    """The indices of ``sampler`` after the first ``skip``."""

    def __init__(self, sampler: Sampler[int], skip: int):
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)


class MemoryFeed:
    """Batches of an in-memory :class:`PairDataset` through a seeded epoch sampler.

    Args:
        dataset: the pairs.
        sampler: ``random`` or ``identity``.
        instances: pairs per identity in a batch (identity sampler).
        micro: pairs per batch of this process.
        rank, world: this process's rank and the number of ranks.
        workers: DataLoader workers.
        seed: seeds the epoch orders.
        pin: pin memory (CUDA).
    """

    def __init__(
        self,
        dataset: PairDataset,
        sampler: str,
        instances: int,
        micro: int,
        rank: int,
        world: int,
        workers: int,
        seed: int,
        pin: bool,
    ):
        self.dataset, self.micro, self.workers, self.seed, self.pin = dataset, micro, workers, seed, pin
        if sampler == "identity":
            self.sampler: EpochSampler | IdentitySampler = IdentitySampler(
                [p.identity for p in dataset.pairs], micro, instances, seed, rank, world
            )
        else:
            self.sampler = EpochSampler(len(dataset), seed, rank, world)
        self.drop_last = len(self.sampler) >= micro
        self.batches = len(self.sampler) // micro if self.drop_last else 1
        self.position: dict = {}

    def epoch(self, epoch: int, start: int = 0, position: dict | None = None) -> Iterator[tuple]:
        """The epoch's batches ``(images, tokens, identities, indices[, partner tokens])`` from batch ``start`` on."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.micro,
            sampler=_Skip(self.sampler, start * self.micro),
            num_workers=self.workers,
            drop_last=self.drop_last,
            pin_memory=self.pin,
            multiprocessing_context=worker_context(self.workers),
            worker_init_fn=loader_worker_init,  # a worker ends with the process that started it, even on SIGKILL
            generator=torch.Generator().manual_seed(self.seed * 7919 + epoch),
        )
        yield from loader

    def end_of_epoch(self, epoch: int) -> None:
        """Nothing to report for in-memory data."""


class StreamFeed:
    """Batches of a :class:`StreamingPairs` stream; remembers every slot's position.

    Args:
        stream: the stream.
        micro: pairs per batch of this process.
        batches: batches per epoch and rank.
        rank, world: this process's rank and the number of ranks.
        workers: DataLoader workers (must divide ``stream.config.slots``).
        seed: seeds the loader.
        pin: pin memory (CUDA).
    """

    def __init__(
        self,
        stream: StreamingPairs,
        micro: int,
        batches: int,
        rank: int,
        world: int,
        workers: int,
        seed: int,
        pin: bool,
    ):
        self.stream, self.micro, self.batches = stream, micro, batches
        self.rank, self.world, self.workers, self.seed, self.pin = rank, world, workers, seed, pin
        self.position: dict = {}
        self.peak_bytes = 0

    def epoch(self, epoch: int, start: int = 0, position: dict | None = None) -> Iterator[tuple]:
        """The epoch's batches from batch ``start`` on, the slots continuing from ``position``.

        Batches are ``(images, tokens, identities, caption ids[, partner tokens])``, as from :class:`MemoryFeed`.
        """
        self.position = dict(position or {})
        self.stream.plan(epoch, self.rank, self.world, self.micro, self.batches, start, self.position)
        extra: dict[str, Any] = {}
        if self.workers:
            extra = {"prefetch_factor": self.stream.config.prefetch, "persistent_workers": False}
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.pin,
            multiprocessing_context=worker_context(self.workers),
            worker_init_fn=loader_worker_init,  # a worker ends with the process that started it, even on SIGKILL
            generator=torch.Generator().manual_seed(self.seed * 7919 + epoch),
            **extra,
        )
        for *batch, info in loader:
            self.position[info["slot"]] = info["state"]
            self.peak_bytes = max(self.peak_bytes, info["peak_bytes"])
            yield tuple(batch)

    def end_of_epoch(self, epoch: int) -> None:
        """Log what the stream skipped this epoch (this rank's slots)."""
        tallies = [tally_from_dict(s["tally"]) for s in self.position.values()]
        pairs = sum(t.captions for t in tallies)
        skipped = sum((t.skipped for t in tallies), start=Counter())
        bad = [b for t in tallies for b in t.bad_shards]
        if skipped or bad:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
            logger.warning(
                "epoch %d, rank %d: streamed %d pairs; skipped %s; %d bad shards%s",
                epoch + 1,
                self.rank,
                pairs,
                reasons or "nothing",
                len(bad),
                f" (first: {bad[0]})" if bad else "",
            )
