"""Streaming pre-training input: bounded memory, seeded shuffling, exact resumption mid-epoch.

:class:`StreamingPairs` reads curated tar shards or WebPerson Parquet shards
as caption-image pairs without ever holding the corpus. Per epoch the plan of
:mod:`gadms.data.shardplan` gives every (rank, slot) a contiguous range of
pair positions; a slot reads its range shard by shard into a block of at most
``buffer_pairs / slots`` pairs and ``buffer_mb / slots`` MB of image bytes,
shuffles the block by a permutation seeded by (seed, epoch, slot, pass,
block start) and cuts batches from it. Decoding, augmentation (seeded by
(seed, epoch, position, pass)) and tokenisation run in the DataLoader
workers; the slots of a rank are split over its workers, so the batches do
not depend on the number of workers (it must divide ``slots``).

After each batch the slot's position (pass, block start, pairs taken from the
block, batches made, problems counted) travels with the batch; a checkpoint
stores the last one of every slot, and a resumed stream re-reads only the
current block. A corrupt image is skipped and counted like a bad sample; a
slot whose range runs out early (bad samples) reads it again (pass 1, 2, ...)
so every rank still makes the same number of batches.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gadms.config import StreamConfig
from gadms.data.samples import StreamTally
from gadms.data.shardplan import Segment, Shard, epoch_order, order_ends, slot_batches, slot_segments
from gadms.data.shardread import StreamPair, read_segment
from gadms.problems import DataError
from gadms.safe_files import UnsafeFile, decode_image

UNDECODABLE = "pairs with undecodable images"


def tally_to_dict(tally: StreamTally) -> dict[str, Any]:
    """A tally as plain data (for checkpoints and worker-to-main messages)."""
    return {
        "samples": tally.samples,
        "captions": tally.captions,
        "skipped": dict(tally.skipped),
        "bad_shards": list(tally.bad_shards),
    }


def tally_from_dict(data: dict[str, Any]) -> StreamTally:
    """The inverse of :func:`tally_to_dict`."""
    return StreamTally(0, data["samples"], data["captions"], Counter(data["skipped"]), list(data["bad_shards"]))


class SlotStream:
    """The pairs of one slot's range, block-shuffled, resumable from a position.

    Args:
        segments: the slot's range as shard segments (see :func:`slot_segments`).
        key: seeds the block permutations: ``(seed, epoch, global slot)``.
        max_pairs: block size limit in pairs.
        max_bytes: block size limit in encoded image bytes.
        state: a position from :meth:`state` to continue from, or None to start.
    """

    def __init__(
        self,
        segments: list[Segment],
        key: tuple[int, int, int],
        max_pairs: int,
        max_bytes: int,
        state: dict | None = None,
    ):
        self.segments, self.key, self.max_pairs, self.max_bytes = segments, key, max_pairs, max_bytes
        state = state or {
            "pass": 0,
            "block_start": None,
            "taken": 0,
            "batches": 0,
            "tally": tally_to_dict(StreamTally()),
        }
        self.passes, self.batches = state["pass"], state["batches"]
        self.tally = tally_from_dict(state["tally"])
        self.block: list[StreamPair] = []
        self.block_passes = self.passes
        self.block_start: int | None = state["block_start"]
        self.taken = 0
        self.block_bytes = 0
        self.counting = True
        self._source = self._pairs(self.block_start)
        if self.block_start is not None:  # re-read the block the position is in, its problems already counted
            self.counting = False
            self._fill()
            self.counting = True
            self.taken = state["taken"]

    def state(self) -> dict:
        """Where the slot is: enough to rebuild it exactly."""
        passes = self.block_passes if self.block else self.passes
        return {
            "pass": passes,
            "block_start": self.block_start,
            "taken": self.taken,
            "batches": self.batches,
            "tally": tally_to_dict(self.tally),
        }

    def _count(self, skipped: Counter, broken: list[str]) -> None:
        if self.counting:
            self.tally.skipped.update(skipped)
            self.tally.bad_shards.extend(broken)

    def _pairs(self, skip_to: int | None) -> Iterator[StreamPair | None]:
        """The slot's pairs from position ``skip_to``, pass after pass, None after each pass.

        A pass without any pair is an error (nothing of the slot's range is readable).
        """
        while True:
            got = 0
            for segment in self.segments:
                if skip_to is not None and segment.offset + segment.end <= skip_to:
                    continue
                seg = (
                    segment
                    if self.passes == 0
                    else Segment(segment.shard, segment.start, segment.end, segment.offset, False)
                )
                for pair in read_segment(seg, -1 if skip_to is None else skip_to, self._count):
                    got += 1
                    yield pair
            if not got and skip_to is None:
                shards = sorted({str(s.shard.path) for s in self.segments})
                raise DataError(
                    f"no readable caption-image pair in {', '.join(shards[:3])}{' ...' if len(shards) > 3 else ''}"
                )
            self.passes += 1
            skip_to = None
            yield None

    def _fill(self) -> None:
        """Read the next block and shuffle it."""
        self.block, self.taken, self.block_bytes = [], 0, 0
        while len(self.block) < self.max_pairs and self.block_bytes < self.max_bytes:
            pair = next(self._source)
            if pair is None:
                if self.block:  # a block never spans two passes
                    break
                continue
            if not self.block:
                self.block_start, passes = pair.position, self.passes
            self.block.append(pair)
            self.block_bytes += len(pair.image)
        order = np.random.default_rng([*self.key, passes, self.block_start]).permutation(len(self.block))
        self.block = [self.block[i] for i in order]
        self.block_passes = passes

    def next_pair(self) -> tuple[StreamPair, int]:
        """The next pair and the pass it belongs to."""
        if self.taken >= len(self.block):
            self._fill()
        pair = self.block[self.taken]
        self.taken += 1
        return pair, self.block_passes


class StreamingPairs(IterableDataset):
    """Caption-image pairs streamed from shards as ready batches.

    A batch is ``(images, tokens, identities, caption_ids, info)``, with the
    partner captions' tokens (TIC) before ``info`` when ``partners`` is set.
    ``caption_ids`` number the captions corpus-wide, the same in every epoch
    (the score memory of ``score_timing: previous_epoch`` is keyed by them);
    ``info`` holds the epoch positions of the batch's pairs and the slot's
    position after it. Call :meth:`plan` before each epoch (in the main
    process, before the DataLoader starts its workers).

    Args:
        shards: the corpus (:func:`~gadms.data.shardplan.curated_index` or ``webperson_index``).
        transform: image transform (seeded per pair).
        tokenizer: CLIP tokenizer.
        seed: seeds the shard order, the blocks and the augmentation.
        config: slots and buffer sizes.
        partners: also yield another caption of each pair's image (its own caption when it has one only).
        identity: ``image`` (the captions of one image are one identity) or ``caption`` (each caption is one).
    """

    def __init__(
        self,
        shards: list[Shard],
        transform,
        tokenizer,
        seed: int = 0,
        config: StreamConfig | None = None,
        partners: bool = False,
        identity: str = "image",
    ):
        self.shards, self.transform, self.tokenizer, self.seed = shards, transform, tokenizer, seed
        self.config = config or StreamConfig()
        self.partners, self.identity = partners, identity
        self.total_pairs = sum(s.pairs for s in shards)
        if self.total_pairs == 0:
            raise DataError("the corpus has no caption-image pairs (its manifests list none)")
        self._plan: dict[str, Any] | None = None

    def plan(
        self, epoch: int, rank: int, world: int, micro: int, batches: int, start: int = 0, states: dict | None = None
    ) -> None:
        """Set the epoch to stream.

        Args:
            epoch: the epoch.
            rank: this process's rank; ``world``: the number of ranks.
            micro: pairs per batch; ``batches``: batches every rank makes this epoch.
            start: batches of the epoch already made (when resuming).
            states: slot -> position, from the batches' ``info`` (when resuming).
        """
        slots = self.config.slots
        quotas = slot_batches(batches, slots)
        starts = [sum(quotas) * micro * rank + sum(quotas[:s]) * micro for s in range(slots)]
        order = epoch_order(self.shards, self.seed, epoch)
        ends = order_ends(order)
        segments = [slot_segments(order, starts[s], quotas[s] * micro, ends) for s in range(slots)]
        self._plan = {
            "epoch": epoch,
            "rank": rank,
            "micro": micro,
            "batches": batches,
            "start": start,
            "segments": segments,
            "states": dict(states or {}),
        }

    def __iter__(self) -> Iterator[tuple]:
        if self._plan is None:
            raise RuntimeError("StreamingPairs.plan() must be called before iterating")
        p, slots = self._plan, self.config.slots
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if slots % workers:
            raise DataError(f"train.num_workers ({workers}) must divide train.stream.slots ({slots})")
        streams: dict[int, SlotStream] = {}
        max_pairs = max(1, self.config.buffer_pairs // slots)
        max_bytes = max(1, int(self.config.buffer_mb * 2**20) // slots)
        self.peak_bytes = 0
        for k in range(p["start"] + worker, p["batches"], workers):
            slot = k % slots
            if slot not in streams:
                key = (self.seed, p["epoch"], p["rank"] * slots + slot)
                streams[slot] = SlotStream(p["segments"][slot], key, max_pairs, max_bytes, p["states"].get(slot))
            stream = streams[slot]
            batch = self._batch(stream, p["micro"], p["epoch"])
            stream.batches += 1
            self.peak_bytes = max(self.peak_bytes, sum(s.block_bytes for s in streams.values()))
            positions = batch.pop()
            yield (
                *batch,
                {"positions": positions, "slot": slot, "state": stream.state(), "peak_bytes": self.peak_bytes},
            )

    def _batch(self, stream: SlotStream, micro: int, epoch: int) -> list[torch.Tensor]:
        """``micro`` decoded, augmented, tokenised pairs; undecodable images are skipped and counted.

        Returns:
            ``[images, tokens, identities, caption_ids, (partner tokens,) positions]``.
        """
        images: list[torch.Tensor] = []
        captions: list[str] = []
        partners: list[str] = []
        identities: list[int] = []
        positions: list[int] = []
        caption_ids: list[int] = []
        misses = 0
        while len(images) < micro:
            pair, passes = stream.next_pair()
            image = self._image(pair, epoch, passes)
            if image is None:
                if pair.countable and passes == 0:
                    stream.tally.skipped[UNDECODABLE] += 1
                misses += 1
                if misses > 100 * micro + len(stream.block):
                    raise DataError(f"{self.shards[pair.identity >> 24].path}: almost no image of this stream decodes")
                continue
            if pair.countable and passes == 0:
                stream.tally.captions += 1
            images.append(image)
            captions.append(pair.caption)
            identities.append(pair.caption_id if self.identity == "caption" else pair.identity)
            positions.append(pair.position)
            caption_ids.append(pair.caption_id)
            partners.append(pair.partner or pair.caption)
        batch = [torch.stack(images), self.tokenizer(captions), torch.tensor(identities), torch.tensor(caption_ids)]
        if self.partners:
            batch.append(self.tokenizer(partners))
        return [*batch, torch.tensor(positions)]

    def _image(self, pair: StreamPair, epoch: int, passes: int) -> torch.Tensor | None:
        """The augmented image tensor, or None when the bytes do not decode."""
        try:  # the shared pixel and bomb checks (gadms.safe_files)
            image = decode_image(pair.image, f"pair {pair.position}")
        except UnsafeFile:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((((self.seed * 1_000_003 + epoch) * 10_000_019 + pair.position) * 101 + passes) % 2**63)
            return self.transform(image)
