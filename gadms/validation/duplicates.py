"""Exact duplicate captions over the whole corpus, with memory bounded by a fixed budget.

GX's uniqueness expectation needs the whole caption column in memory. Here
each batch's non-empty texts are hashed to 64 bits and spilled to disk as
``(hash, first row, copies)`` records (already merged within the batch). Once
the corpus is read, the records are split into K partition files by hash, K
chosen from their number so that a partition holds about ``partition_records``
of them, and each partition is counted on its own, in chunks, merging records
of equal hash. Memory: one batch, then one chunk plus one partition's distinct
hashes (``PARTITION_RECORDS`` x 24 bytes, 3 MB, and sorting space); disk: 24
bytes a caption, twice. K files are open at once while partitioning (about 80
at 10M captions, 800 at 100M).

A caption fails when its text occurs more than once (every copy counts, the
first too), as in ``ExpectColumnValuesToBeUnique``. The most copied texts are
ordered by copies, then by first row, as the single-table gate did; their
text is read back from the shard that holds the first copy and its hash
checked. Hash collisions: for N distinct captions the chance that any two
share a 64-bit hash is about N^2 / 2^65 (3e-6 at 10M captions); a collision
would merge two texts' counts, and the risk is accepted at that level.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from gadms.validation.combine import EXAMPLES
from gadms.validation.corpus import CorpusReader
from gadms.validation.results import GateError

PARTITION_RECORDS = 1 << 17
CHUNK_RECORDS = 1 << 15  # records read at once while partitioning and counting
_RECORD = np.dtype([("hash", "<u8"), ("first", "<i8"), ("copies", "<i8")])


@dataclass(frozen=True)
class DuplicateGroup:
    """One repeated text: its hash, the row of its first copy, and how many copies there are."""

    hash: int
    first: int
    copies: int


@dataclass(frozen=True)
class DuplicateCount:
    """The duplicate check's totals.

    Attributes:
        texts: captions with text (the rows the check applies to).
        duplicated: captions whose text occurs more than once, every copy counted.
        top: the most copied texts, most copies first, ties by first appearance.
        partitions: how many partitions the hashes were counted in.
    """

    texts: int
    duplicated: int
    top: list[DuplicateGroup]
    partitions: int = 1


def text_hashes(texts: np.ndarray) -> np.ndarray:
    """64-bit hashes of texts (pandas' SipHash with its fixed key, so the same in every run).

    Args:
        texts: an object array of ``str``.

    Returns:
        A ``uint64`` array.
    """
    return pd.util.hash_array(texts, categorize=False)


def merge_records(records: np.ndarray) -> np.ndarray:
    """Records of equal hash merged: the smallest first row, the copies summed; sorted by hash.

    Args:
        records: an array of ``(hash, first, copies)`` records.

    Returns:
        One record per distinct hash.
    """
    if len(records) == 0:
        return records
    ordered = records[np.lexsort((records["first"], records["hash"]))]
    starts = np.flatnonzero(np.r_[True, ordered["hash"][1:] != ordered["hash"][:-1]])
    merged = ordered[starts]  # the first of each run has the smallest row
    merged["copies"] = np.add.reduceat(ordered["copies"], starts)
    return merged


class DuplicateCounter:
    """Counts exact duplicate texts batch by batch; a context manager that owns its spill folder."""

    def __init__(self, partition_records: int | None = None, limit: int = EXAMPLES):
        """Make the spill folder (under the system's temporary directory).

        Args:
            partition_records: records per partition, the memory budget (default ``PARTITION_RECORDS``).
            limit: how many of the most copied texts to keep.
        """
        self.partition_records = max(1, partition_records or PARTITION_RECORDS)
        self.limit = limit
        self.texts = 0
        self._records = 0
        self._folder = tempfile.TemporaryDirectory(prefix="gadms-gate-")
        self._spill_path = Path(self._folder.name) / "records.bin"
        self._spill: BinaryIO | None = open(self._spill_path, "wb")

    def __enter__(self) -> "DuplicateCounter":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Delete the spill folder."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._folder.cleanup()

    def add(self, captions: pd.DataFrame) -> None:
        """Spill one batch's texts.

        Args:
            captions: a caption batch (``row`` and ``text`` columns; missing texts are skipped).
        """
        assert self._spill is not None, "DuplicateCounter.add after count"
        present = captions["text"].notna().to_numpy()
        records = np.zeros(int(present.sum()), _RECORD)
        records["hash"] = text_hashes(captions["text"].to_numpy(object)[present])
        records["first"] = captions["row"].to_numpy()[present]
        records["copies"] = 1
        merged = merge_records(records)
        merged.tofile(self._spill)
        self.texts += len(records)
        self._records += len(merged)

    def count(self) -> DuplicateCount:
        """Count the duplicates of everything added (call once, after the last batch).

        Returns:
            The totals and the most copied texts.
        """
        assert self._spill is not None, "DuplicateCounter.count called twice"
        self._spill.close()
        self._spill = None
        duplicated, top = 0, np.zeros(0, _RECORD)
        partitions = self._partitions()
        for partition in partitions:
            groups = self._distinct(partition)
            repeated = groups[groups["copies"] > 1]
            duplicated += int(repeated["copies"].sum())
            top = _most_copied(np.concatenate([top, repeated]), self.limit)
        found = [DuplicateGroup(int(r["hash"]), int(r["first"]), int(r["copies"])) for r in top]
        return DuplicateCount(self.texts, duplicated, found, len(partitions))

    def _partitions(self) -> list[Path]:
        """Split the spill into K files by hash, K = records / budget (just the spill when it fits)."""
        parts = math.ceil(self._records / self.partition_records)
        if parts <= 1:
            return [self._spill_path]
        paths = [self._spill_path.with_name(f"part-{k:05d}.bin") for k in range(parts)]
        with ExitStack() as stack, open(self._spill_path, "rb") as spill:
            outs = [stack.enter_context(open(p, "wb")) for p in paths]
            while len(chunk := np.fromfile(spill, _RECORD, count=CHUNK_RECORDS)):
                _scatter(chunk, chunk["hash"] % np.uint64(parts), outs)
        self._spill_path.unlink()
        return paths

    def _distinct(self, path: Path) -> np.ndarray:
        """One partition's records merged by hash, read a chunk at a time."""
        groups = np.zeros(0, _RECORD)
        with open(path, "rb") as handle:
            while len(chunk := np.fromfile(handle, _RECORD, count=CHUNK_RECORDS)):
                groups = merge_records(np.concatenate([groups, chunk]))
        path.unlink()
        return groups


def _scatter(chunk: np.ndarray, part: np.ndarray, outs: list[Any]) -> None:
    """Append each record of ``chunk`` to the file of its partition, keeping their order."""
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(len(outs) + 1, dtype=np.uint64))
    for k, out in enumerate(outs):
        chunk[order[bounds[k] : bounds[k + 1]]].tofile(out)


def _most_copied(groups: np.ndarray, limit: int) -> np.ndarray:
    """The ``limit`` groups with the most copies, ties broken by the earlier first row."""
    return groups[np.lexsort((groups["first"], -groups["copies"]))[:limit]]


def first_copies(count: DuplicateCount, reader: CorpusReader) -> list[tuple[str, str]]:
    """Where the most copied texts first occur, and the texts, read back from the corpus.

    Args:
        count: the duplicate totals.
        reader: the reader that streamed the corpus (it finds the shards holding the first copies).

    Returns:
        ``(WHERE, text)`` per group of ``count.top``; ``GateError`` when a shard changed
        while the gate ran (the text read back no longer has the counted hash).
    """
    rows = reader.caption_rows(g.first for g in count.top)
    found = []
    for group in count.top:
        row = rows.get(group.first)
        text = None if row is None else row["text"]
        if row is None or text is None or int(text_hashes(np.array([text], dtype=object))[0]) != group.hash:
            raise GateError(f"quality gate: {reader.data_dir} changed while the gate read it; re-run the gate")
        found.append((str(row["where"]), str(text)))
    return found
