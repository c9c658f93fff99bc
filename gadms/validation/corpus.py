"""The curated corpus as the gate sees it: batches of caption rows and crop rows, and a fingerprint.

The gate checks the bytes training will read, so it streams the shard tars
itself (sample JSON only; images are not decoded) and hashes them in the same
pass. It hands the suites one batch of whole samples at a time (about
``batch_captions`` captions), so its memory follows the batch, not the corpus.
A sample whose JSON is missing, malformed or has no captions becomes one
empty caption, and a sample without a usable ``crop_size`` (or without its
image) a 0 x 0 crop, so that broken samples fail checks instead of vanishing.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from bisect import bisect_right
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generator, Iterable, Iterator

import pandas as pd

from gadms.data.curated import IMAGE_EXTENSIONS, SampleMembers, curated_shards, grouped_members, split_member_name
from gadms.problems import DataError
from gadms.safe_files import UnsafeFile, open_regular
from gadms.storage import local_path
from gadms.validation.results import GateError

_CHUNK = 1 << 20
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class RawSample:
    """One sample's members as found in a shard: where it is, its JSON bytes, whether it has an image."""

    where: str
    json: bytes | None
    has_image: bool


@dataclass(frozen=True)
class GateBatch:
    """A run of whole samples in the shape the expectation suites read.

    Attributes:
        captions: columns ``row, where, caption, text, word_count``; ``row`` numbers the
            corpus's captions from 0, ``text`` is the stripped caption (missing when
            empty) and ``word_count`` missing likewise.
        crops: columns ``row, where, width, height, short_side, aspect``; ``row`` numbers
            the corpus's samples from 0, ``aspect`` (w/h) is missing when the height is unknown.
    """

    captions: pd.DataFrame
    crops: pd.DataFrame


class _HashingReader:
    """A read-only file wrapper that feeds every byte read into a hash."""

    def __init__(self, handle: BinaryIO, digest: Any):
        self._handle = handle
        self._digest = digest

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever is left, e.g. the zero padding after the end-of-archive marker."""
        while self.read(_CHUNK):
            pass


def shard_paths(data_dir: Path) -> list[Path]:
    """The shard tars of a curated directory, chosen exactly as the training reader chooses them.

    Args:
        data_dir: the curated corpus directory.

    Returns:
        Shard paths in name order; ``GateError`` when the directory is missing or has none.
    """
    try:
        return [local_path(s, "the corpus the quality gate checks") for s in curated_shards(data_dir)]
    except DataError as err:
        raise GateError(f"quality gate: {err}") from None


def corpus_fingerprint(data_dir: Path) -> str:
    """sha256 over each shard's name and bytes, in name order (what ``gate.json`` records).

    Args:
        data_dir: the curated corpus directory.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    for shard in shard_paths(data_dir):
        with open_regular(shard) as handle:  # regular files only (gadms.safe_files)
            reader = _HashingReader(handle, digest)
            _hash_name(digest, shard)
            reader.drain()
    return digest.hexdigest()


def _hash_name(digest: Any, shard: Path) -> None:
    """Put a shard's name into the fingerprint, so renamed or reordered shards change it."""
    digest.update(shard.name.encode("utf-8") + b"\0")


class CorpusReader:
    """Streams a curated corpus once, in batches of whole samples, hashing its bytes on the way.

    After :meth:`batches` is exhausted, ``captions``, ``samples`` and ``fingerprint``
    describe the whole corpus and :meth:`caption_rows` reads given caption rows back.
    """

    def __init__(self, data_dir: Path, batch_captions: int):
        """Find the shards (``GateError`` when the directory is missing or has none).

        Args:
            data_dir: the curated corpus directory.
            batch_captions: a batch is closed once it holds at least this many captions.
        """
        self.data_dir = Path(data_dir)
        self.shards = shard_paths(self.data_dir)
        self.batch_captions = max(1, batch_captions)
        self.captions = 0
        self.samples = 0
        self._shard_starts: list[int] = []
        self._digest = hashlib.sha256()

    @property
    def fingerprint(self) -> str:
        """sha256 over each shard's name and bytes, in name order (complete once the stream is read)."""
        return self._digest.hexdigest()

    @property
    def shard_names(self) -> list[str]:
        """Shard file names, in the order they are read."""
        return [s.name for s in self.shards]

    def batches(self) -> Iterator[GateBatch]:
        """Every sample of every shard, in corpus order, as batches.

        Returns:
            An iterator of batches; ``GateError`` when a shard is not a readable tar or
            (once all are read) the corpus holds no samples.
        """
        captions: list[dict[str, Any]] = []
        crops: list[dict[str, Any]] = []
        for shard in self.shards:
            self._shard_starts.append(self.captions + len(captions))
            for sample in _shard_samples(shard, self._digest):
                meta = sample_meta(sample)
                captions.extend(caption_rows_of(sample.where, meta))
                crops.append(crop_row_of(sample, meta))
                if len(captions) >= self.batch_captions:
                    yield self._batch(captions, crops)
                    captions, crops = [], []
        if crops:
            yield self._batch(captions, crops)
        if not self.samples:
            raise GateError(f"quality gate: no samples in the shards of {self.data_dir}")

    def _batch(self, captions: list[dict[str, Any]], crops: list[dict[str, Any]]) -> GateBatch:
        """Number the rows on from the previous batch's and count them."""
        batch = GateBatch(_table(captions, self.captions), _table(crops, self.samples))
        self.captions += len(captions)
        self.samples += len(crops)
        return batch

    def caption_rows(self, rows: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Read given caption rows back (only the shards that hold them are read again).

        Args:
            rows: caption row numbers, as in the batches.

        Returns:
            Row number -> ``{where, caption, text, word_count}`` for each row found.
        """
        wanted = set(rows)
        found: dict[int, dict[str, Any]] = {}
        for index in sorted({bisect_right(self._shard_starts, row) - 1 for row in wanted}):
            row = self._shard_starts[index]
            with closing(_shard_samples(self.shards[index], hashlib.sha256())) as samples:
                for sample in samples:
                    for caption in caption_rows_of(sample.where, sample_meta(sample)):
                        if row in wanted:
                            found[row] = caption
                        row += 1
                    if wanted <= found.keys():
                        break
        return found


def _shard_samples(shard: Path, digest: Any) -> Generator[RawSample, None, None]:
    """The samples of one shard, in member order, hashing the shard's bytes on the way."""
    try:
        with open_regular(shard) as handle:  # regular files only (gadms.safe_files)
            reader = _HashingReader(handle, digest)
            _hash_name(digest, shard)
            yield from _tar_samples(shard.name, reader)
            reader.drain()
    except (tarfile.TarError, OSError, EOFError, UnsafeFile) as err:
        raise GateError(f"quality gate: {shard}: not a readable tar ({err})") from None


def _tar_samples(shard_name: str, reader: _HashingReader) -> Iterator[RawSample]:
    """Group adjacent members by WebDataset key; only JSON bytes are read, images just noted."""
    last = SampleMembers()
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for key, members in grouped_members(tar, _json_bytes, last):
            yield _raw_sample(shard_name, key, members)
    if last.key is not None:
        yield _raw_sample(shard_name, last.key, last.members)


def _json_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A JSON member's bytes; an image member is only noted (empty bytes)."""
    if split_member_name(member.name)[1] != "json":
        return b""
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _raw_sample(shard_name: str, key: str, members: dict[str, bytes]) -> RawSample:
    """A sample from its members (``where`` is ``SHARD/KEY``)."""
    has_image = any(ext in members for ext in IMAGE_EXTENSIONS)
    return RawSample(f"{shard_name}/{key}", members.get("json"), has_image)


def sample_meta(sample: RawSample) -> dict[str, Any]:
    """The sample's parsed JSON object; ``{}`` when missing, malformed or not an object.

    Args:
        sample: the raw sample.

    Returns:
        The metadata mapping. Bytes that are not valid UTF-8 are decoded with
        U+FFFD in their place, so the text check, not the parser, reports them.
    """
    if sample.json is None:
        return {}
    try:
        meta = json.loads(sample.json.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def caption_rows_of(where: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per caption of a sample; a sample without a caption list gives one empty caption.

    Args:
        where: the sample's ``SHARD/KEY``.
        meta: its parsed JSON (see :func:`sample_meta`).

    Returns:
        Rows with ``where, caption, text, word_count`` (``row`` is added later);
        a caption that is not a string counts as empty.
    """
    captions = meta.get("captions")
    if not isinstance(captions, list) or not captions:
        captions = [""]
    return [_caption_row(where, c if isinstance(c, str) else "") for c in captions]


def _caption_row(where: str, caption: str) -> dict[str, Any]:
    """One caption row; lone surrogates (from JSON escapes) become U+FFFD, which the text check rejects."""
    caption = _SURROGATE.sub("\ufffd", caption)
    text = caption.strip() or None
    return {"where": where, "caption": caption, "text": text, "word_count": None if text is None else len(text.split())}


def crop_row_of(sample: RawSample, meta: dict[str, Any]) -> dict[str, Any]:
    """The crop row of a sample: its ``crop_size``, or 0 x 0 when unknown or when the image is missing.

    Args:
        sample: the raw sample.
        meta: its parsed JSON (see :func:`sample_meta`).

    Returns:
        A row with ``where, width, height, short_side, aspect`` (``row`` is added later).
    """
    width, height = _size(meta.get("crop_size")) if sample.has_image else (0.0, 0.0)
    aspect = width / height if height > 0 else None
    return {"where": sample.where, "width": width, "height": height, "short_side": min(width, height), "aspect": aspect}


def _size(size: Any) -> tuple[float, float]:
    """``(width, height)`` from a JSON ``[w, h]``; ``(0, 0)`` when it is anything else."""
    if isinstance(size, list) and len(size) == 2 and all(_is_number(v) for v in size):
        return float(size[0]), float(size[1])
    return 0.0, 0.0


def _is_number(value: Any) -> bool:
    """A finite, non-negative JSON number (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


def _table(rows: list[dict[str, Any]], first: int) -> pd.DataFrame:
    """A DataFrame of ``rows`` with a leading ``row`` column numbering them from ``first``."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", range(first, first + len(frame)))
    return frame
