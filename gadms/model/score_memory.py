"""Per-caption token scores carried from one epoch to the next (``model.masking.score_timing: previous_epoch``).

The official GA-DMS code masks with scores stored per caption and computed in
an earlier epoch; in the first epoch every word token scores
``initial_score`` (0.85 there). Scores computed during an epoch are only used
from the next epoch on, whatever order the captions come in.

Storage: one memory-mapped file per node, shared by all its ranks (page cache,
not private memory), indexed by caption id 0..P-1. After a 64-byte header
(magic, version, width, P), caption ``i`` owns one record of two slots, each an
int32 stamp (1 + the epoch that wrote it; 0: empty), an int16 row length and a
float16 row of ``width`` positions (the context length): 12 + 4 * width bytes.
A read in epoch ``e`` takes the slot with the largest stamp <= e (written in an
earlier epoch); a write in epoch ``e`` goes to the slot stamped e + 1, else to
the slot a read does not take, so the readable row never changes during an
epoch. Every rank writes the same gathered rows (identical bytes), so each sees
its own writes in order and no rank waits for another.

Where: :func:`store_path` = ``$TMPDIR/gadms-scores-<hash of host name and run
directory>.bin`` (``tempfile.gettempdir()``: node-local unless TMPDIR points
elsewhere), which every rank of a node names without talking to the others.
The node's first rank writes it (empty, restored from a checkpoint's copy, or
converted from an old checkpoint's rows) through a temporary file and a rename
before the others map it (:func:`prepare_store`); training removes it at the
end. A checkpoint holds no rows, only the name, size and SHA-256 of a copy of
the file written beside it once (:meth:`ScoreMemory.save_copy`).

A memory that is never :meth:`~ScoreMemory.open`-ed keeps its rows in a
private unnamed temporary file that grows with the largest caption id (one
process, e.g. a :class:`~gadms.model.step.TrainingStep` used on its own).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import socket
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from gadms.model.gass import valid_token_mask

HEADER = struct.Struct("<8sIIQ")  # magic, version, width, captions
HEADER_BYTES = 64
MAGIC, VERSION = b"GADMSSCR", 1
COPY_PREFIX = "checkpoint.scores."  # checkpoint.scores.<first 16 hex digits of the SHA-256>.bin
CHUNK = 16 * 2**20


def record_dtype(width: int) -> np.dtype:
    """One caption's record: two slots of stamp, row length and float16 row.

    Args:
        width: positions per row (the context length).

    Returns:
        The numpy structured dtype (``12 + 4 * width`` bytes).
    """
    return np.dtype([("stamp", "<i4", (2,)), ("length", "<i2", (2,)), ("rows", "<f2", (2, width))])


def store_bytes(captions: int, width: int) -> int:
    """Size of the store file of ``captions`` records of ``width`` positions (header included)."""
    return HEADER_BYTES + captions * record_dtype(width).itemsize


def store_path(run_dir: Path) -> Path:
    """The node-local store file of the run writing to ``run_dir`` (the same name on every rank of a node).

    Args:
        run_dir: the run's output directory.

    Returns:
        ``<tempdir>/gadms-scores-<16 hex digits>.bin``, keyed by host name and the resolved run directory.
    """
    key = hashlib.sha256(f"{socket.gethostname()}\0{Path(run_dir).resolve()}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gadms-scores-{key}.bin"


def _temp_beside(path: Path) -> Path:
    """A temporary sibling of ``path`` (renamed onto it once complete)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _reserve(fd: int, size: int, where: Path) -> None:
    """Give the file at ``fd`` ``size`` bytes of zeros, reserved on disk (a one-line error when there is no room)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ValueError(
                f"{where}: no room for the score store ({size / 1e9:.2f} GB); point TMPDIR at a disk with room"
            ) from None
        os.ftruncate(fd, size)  # file systems without fallocate: a sparse file


def _write_empty(path: Path, captions: int, width: int) -> None:
    """Write an empty store file (every stamp 0) at ``path``."""
    with open(path, "wb") as f:
        _reserve(f.fileno(), store_bytes(captions, width), path.parent)
        f.write(HEADER.pack(MAGIC, VERSION, width, captions))


def create_store(path: Path, captions: int, width: int) -> None:
    """Write an empty store at ``path`` through a temporary file and a rename (replacing a stale one).

    Args:
        path: the store file.
        captions: records (caption ids 0..captions-1).
        width: positions per row.
    """
    tmp = _temp_beside(path)
    try:
        _write_empty(tmp, captions, width)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_header(fd: int, name: object) -> tuple[int, int]:
    """``(width, captions)`` of the store open at ``fd``; a one-line ValueError when it is not one."""
    raw = os.pread(fd, HEADER.size, 0)
    if len(raw) < HEADER.size or raw[:8] != MAGIC:
        raise ValueError(f"{name}: not a gadms score store")
    _, version, width, captions = HEADER.unpack(raw)
    if version != VERSION:
        raise ValueError(f"{name}: score store version {version}, this gadms reads version {VERSION}")
    if os.fstat(fd).st_size < store_bytes(captions, width):
        raise ValueError(f"{name}: score store is truncated")
    return width, captions


def _copy_hashed(fd: int, size: int, dest: Path) -> str:
    """Copy the first ``size`` bytes of the file at ``fd`` to ``dest``; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        done = 0
        while done < size:
            block = os.pread(fd, min(CHUNK, size - done), done)
            if not block:
                raise ValueError(f"{dest}: source ended after {done} of {size} bytes")
            digest.update(block)
            out.write(block)
            done += len(block)
    return digest.hexdigest()


def _restore_copy(entry: dict, source_dir: Path, path: Path, captions: int, width: int) -> None:
    """Copy the checkpoint's store copy to ``path`` after checking its size, SHA-256 and shape."""
    source = Path(source_dir) / str(entry["file"])
    if not source.is_file():
        raise ValueError(f"{source}: the checkpoint's score store copy is missing")
    size = source.stat().st_size
    if size != entry["bytes"]:
        raise ValueError(f"{source}: {size} bytes, the checkpoint recorded {entry['bytes']}")
    tmp = _temp_beside(path)
    try:
        fd = os.open(source, os.O_RDONLY)
        try:
            stored_width, stored_captions = read_header(fd, source)
            digest = _copy_hashed(fd, size, tmp)
        finally:
            os.close(fd)
        if digest != entry["sha256"]:
            raise ValueError(f"{source}: SHA-256 differs from the checkpoint's record (changed or corrupt)")
        _require_shape(source, stored_width, stored_captions, width, captions)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _require_shape(name: object, stored_width: int, stored_captions: int, width: int, captions: int) -> None:
    """A one-line ValueError when a store's rows or caption count do not fit this run."""
    if stored_width != width:
        raise ValueError(f"{name}: score rows of {stored_width} positions, this run's context length is {width}")
    if stored_captions != captions:
        raise ValueError(f"{name}: scores of {stored_captions} captions, this run's corpus has {captions}")


def _convert_rows(state: dict, path: Path, captions: int, width: int) -> None:
    """Write the rows of an old checkpoint's dict-style entry into a new store at ``path``."""
    tmp = _temp_beside(path)
    try:
        _write_empty(tmp, captions, width)
        memory = ScoreMemory(width=width)
        memory.open(tmp)
        try:
            memory.load_state_dict(state)
        finally:
            memory.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_store(path: Path, captions: int, width: int, entry: dict | None, source_dir: Path) -> None:
    """Fill the node's store at ``path`` before its ranks map it.

    Args:
        path: the store file (:func:`store_path`).
        captions: the corpus's caption count (ids 0..captions-1).
        width: positions per row (the context length).
        entry: a checkpoint's ``score_memory`` entry (a copy's record, or an old checkpoint's rows), None: empty.
        source_dir: the checkpoint's directory, which holds the copy.

    Raises:
        ValueError: one line when the copy is missing, altered or of another shape.
    """
    if entry is None:
        create_store(path, captions, width)
    elif "file" in entry:
        _restore_copy(entry, source_dir, path, captions, width)
    else:
        _convert_rows(entry, path, captions, width)


def drop_stale_copies(directory: Path, keep: dict | None) -> None:
    """Delete the store copies in ``directory`` other than the one the checkpoint entry ``keep`` names."""
    name = None if keep is None else keep.get("file")
    for stale in Path(directory).glob(f"{COPY_PREFIX}*.bin"):
        if stale.name != name:
            stale.unlink(missing_ok=True)


def _pack(indices: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> dict[str, torch.Tensor]:
    """The rows of ``indices`` as the dict-style state's ``{"indices", "scores"}`` (one shared length)."""
    if not len(indices):
        return {"indices": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0, 0, dtype=torch.float16)}
    if (lengths != lengths[0]).any():
        raise ValueError("score memory holds rows of several lengths; they do not pack into one tensor")
    scores = torch.from_numpy(np.ascontiguousarray(rows[:, : int(lengths[0])]))
    return {"indices": torch.from_numpy(indices.astype(np.int64)), "scores": scores}


class ScoreMemory:
    """Stored ``(N,)`` score rows keyed by caption index, in a memory-mapped file.

    Args:
        initial_score: score of every word token of a caption with nothing stored yet.
        width: the longest row it holds (the model's context length).
    """

    def __init__(self, initial_score: float = 0.85, width: int = 77):
        self.initial_score = initial_score
        self.width = width
        self.epoch = 0
        self.path: Path | None = None  # the shared store, once opened
        self.captions = 0
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._records: np.ndarray | None = None

    @property
    def is_open(self) -> bool:
        """Whether a shared store file is mapped (:meth:`open`)."""
        return self.path is not None

    def open(self, path: Path) -> None:
        """Map the store file at ``path`` (shared with the node's other ranks); a one-line error on a bad one."""
        self.close()
        fd = os.open(path, os.O_RDWR)
        try:
            width, captions = read_header(fd, path)
            if width != self.width:
                raise ValueError(f"{path}: score rows of {width} positions, this memory's width is {self.width}")
        except Exception:
            os.close(fd)
            raise
        self._map_file(fd, captions)
        self.path = Path(path)

    def _map_file(self, fd: int, captions: int) -> None:
        """Map ``captions`` records of the file at ``fd`` (shared: writes go to the file's pages)."""
        self._map = mmap.mmap(fd, store_bytes(captions, self.width))
        self._fd, self.captions = fd, captions
        self._records = np.frombuffer(self._map, record_dtype(self.width), captions, HEADER_BYTES)

    def close(self) -> None:
        """Unmap the store (the file stays)."""
        self._records = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path, self.captions = None, 0

    def remove(self) -> None:
        """Unmap and delete the shared store file (the end of training); a private one just goes."""
        path = self.path
        self.close()
        if path is not None:
            path.unlink(missing_ok=True)

    def _grow(self, needed: int) -> None:
        """Make the private store hold caption ids below ``needed`` (a shared store has a fixed size)."""
        if self.is_open:
            raise ValueError(f"caption id {needed - 1} is outside the score store of {self.captions} captions")
        captions = max(1024, 1 << (needed - 1).bit_length())
        fd = self._fd
        if fd < 0:
            fd, name = tempfile.mkstemp(prefix="gadms-scores-")
            os.unlink(name)  # unnamed: it goes when the memory does
        self._records = None
        if self._map is not None:
            self._map.close()
        os.ftruncate(fd, store_bytes(captions, self.width))
        os.pwrite(fd, HEADER.pack(MAGIC, VERSION, self.width, captions), 0)
        self._map_file(fd, captions)

    def _ids(self, indices: torch.Tensor, grow: bool) -> np.ndarray:
        """Caption ids as int64, checked (and, storing into a private store, made room for)."""
        ids = indices.detach().cpu().numpy().astype(np.int64).reshape(-1)
        if len(ids) and ids.min() < 0:
            raise ValueError(f"caption id {int(ids.min())} is negative")
        if len(ids) and ids.max() >= self.captions and (grow or self.is_open):
            self._grow(int(ids.max()) + 1)
        return ids

    def start_epoch(self, epoch: int) -> None:
        """Move to ``epoch``: scores of the epochs before it become readable."""
        self.epoch = epoch

    def _readable(self, stamps: np.ndarray) -> np.ndarray:
        """Per record of ``stamps`` ``(K, 2)``: the slot a read in this epoch takes, or -1."""
        ok = (stamps >= 1) & (stamps <= self.epoch)
        slot = np.where(ok, stamps, -1).argmax(axis=1)
        return np.where(ok.any(axis=1), slot, -1)

    def lookup(self, indices: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)`` for the captions ``indices`` (``initial_score`` on word tokens where none is stored)."""
        valid = valid_token_mask(tokens)
        out = torch.full(tokens.shape, self.initial_score, dtype=torch.float32)
        ids = self._ids(indices, grow=False)
        n = tokens.shape[1]
        inside = ids < self.captions
        if self._records is not None and inside.any() and n <= self.width:
            records = self._records[ids[inside]]  # a copy of just these records
            slot = self._readable(records["stamp"])
            picked = np.maximum(slot, 0)
            rows = np.arange(len(slot))
            hit = (slot >= 0) & (records["length"][rows, picked] == n)
            found = np.flatnonzero(inside)[hit]
            out[torch.from_numpy(found)] = torch.from_numpy(records["rows"][rows, picked, :n][hit]).float()
        return out.to(tokens.device) * valid

    def store(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep this epoch's ``scores`` ``(B, N)`` of the captions ``indices`` (the last of a repeated caption)."""
        rows = scores.detach().cpu().to(torch.float16).numpy()
        if rows.shape[1] > self.width:
            raise ValueError(f"score rows of {rows.shape[1]} positions do not fit the score store's {self.width}")
        ids = self._ids(indices, grow=True)
        if not len(ids):
            return
        unique, last = np.unique(ids[::-1], return_index=True)  # a repeated caption keeps its last row
        self._write(unique, rows[len(ids) - 1 - last], self._write_slots(unique), self.epoch + 1)

    def _write_slots(self, ids: np.ndarray) -> np.ndarray:
        """The slot each caption's row of this epoch goes to: the one stamped now, else the one a read skips."""
        assert self._records is not None
        stamps = self._records["stamp"][ids]
        now = stamps == self.epoch + 1
        other = 1 - np.maximum(self._readable(stamps), 0)  # none readable: slot 1 - 0 = 1
        return np.where(now.any(axis=1), now.argmax(axis=1), other)

    def _write(self, ids: np.ndarray, rows: np.ndarray, slots: np.ndarray, stamp: int) -> None:
        """Write ``rows`` into ``slots`` of ``ids``: row, then length, then the stamp."""
        assert self._records is not None
        length = rows.shape[1]
        self._records["rows"][ids, slots, :length] = rows
        self._records["length"][ids, slots] = length
        self._records["stamp"][ids, slots] = stamp

    def readable_count(self) -> int:
        """Captions with a stored row that a read in this epoch takes."""
        if self._records is None:
            return 0
        return int((self._readable(np.asarray(self._records["stamp"])) >= 0).sum())

    def save_copy(self, directory: Path) -> dict:
        """Copy the store beside a checkpoint (temporary file, then a rename) once.

        Args:
            directory: the checkpoint's directory.

        Returns:
            The checkpoint's record of it: ``file`` (its name), ``bytes``, ``sha256``, ``captions``, ``width``.
        """
        if self._records is None:
            raise ValueError("score memory: nothing stored yet, there is no store to copy")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        size = store_bytes(self.captions, self.width)
        tmp = directory / f".{COPY_PREFIX}tmp-{os.getpid()}"
        try:
            digest = _copy_hashed(self._fd, size, tmp)
            name = f"{COPY_PREFIX}{digest[:16]}.bin"
            os.replace(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
        return {"file": name, "bytes": size, "sha256": digest, "captions": self.captions, "width": self.width}

    def state_dict(self) -> dict:
        """The rows as tensors, in the dict-style layout of older checkpoints (small memories; tests).

        Returns:
            ``{"epoch", "settled": {"indices", "scores"}, "fresh": {...}}``: rows readable now and rows of this epoch.
        """
        empty = np.zeros(0, dtype=np.int64)
        if self._records is None:
            return {"epoch": self.epoch, "settled": _pack(empty, empty, empty), "fresh": _pack(empty, empty, empty)}
        stamps = np.asarray(self._records["stamp"])
        out: dict = {"epoch": self.epoch}
        readable = self._readable(stamps)
        fresh = stamps == self.epoch + 1
        for name, ids, slots in (
            ("settled", np.flatnonzero(readable >= 0), readable[readable >= 0]),
            ("fresh", np.flatnonzero(fresh.any(axis=1)), fresh.argmax(axis=1)[fresh.any(axis=1)]),
        ):
            rows, lengths = self._records["rows"][ids, slots], self._records["length"][ids, slots]
            out[name] = _pack(ids, rows, lengths)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Replace every row with those of :meth:`state_dict`'s layout (an older checkpoint's entry).

        Settled rows count as written in the epoch before ``state["epoch"]``, fresh ones in it; rows longer than
        the width, and (in a shared store) ids outside it, are dropped: no lookup could read them.
        """
        self.epoch = int(state["epoch"])
        if self._records is not None:
            self._records["stamp"][:] = 0
        for slot, name in ((0, "settled"), (1, "fresh")):
            ids = state[name]["indices"].detach().cpu().numpy().astype(np.int64).reshape(-1)
            rows = state[name]["scores"].detach().cpu().to(torch.float16).numpy()
            if not len(ids) or rows.ndim != 2 or rows.shape[1] > self.width:
                continue
            keep = (ids >= 0) & (ids < self.captions if self.is_open else True)
            self._ids(torch.from_numpy(ids[keep]), grow=True)
            unique, last = np.unique(ids[keep][::-1], return_index=True)
            picked = rows[keep][int(keep.sum()) - 1 - last]
            self._write(unique, picked, np.full(len(unique), slot), self.epoch + slot)
