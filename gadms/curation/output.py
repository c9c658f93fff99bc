"""The curated output directory: its lock, its safety checks, and the done markers of its shards.

``OUT/meta/NAME.report.json`` is a shard's done marker, written last. It holds a
hash of the input shard's bytes, the parameters' fingerprint, the shard's
origin and its report. The origin names where the shard came from without
the machine's paths: the input folder's name and the file name
(``web/00000.tar``; for folder input ``photos#00003``, the chunk). A URL keeps
only its last folder and file name too, so no credential is ever written.

A source shard keeps its name in ``OUT`` unless ``OUT`` already holds a
finished shard of that name from another origin with other bytes (another
week's ``00000.tar``): it is then added as ``NAME-<8 hex of its origin>``, so
curating new input into an existing corpus adds to it and never replaces what
is there. A shard of the same origin whose bytes changed (rewritten in place)
replaces the old one, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from gadms.curation.records import SourceShard
from gadms.curation.report import ShardReport
from gadms.curation.sources import shard_digest
from gadms.data.corpus_index import INDEX_NAME
from gadms.locks import LOCK_NAME, OutputBusy, holder_text, writer_lock
from gadms.reproducible_writes import json_bytes
from gadms.storage import Location, is_url

META_DIR = "meta"
MANIFEST = "manifest.parquet"
REPORT = "report.json"
LOCK = LOCK_NAME


class CurationError(ValueError):
    """The curation run cannot go on; the message is one line."""


def marker_path(out: Path, name: str) -> Path:
    """The done marker of curated shard ``name``."""
    return out / META_DIR / f"{name}.report.json"


def shard_origin(shard: SourceShard) -> str:
    """Where ``shard`` comes from, free of the machine's paths: ``FOLDER/FILE``, or ``FOLDER#CHUNK`` for folders."""
    if is_url(shard.path):
        url = urlsplit(str(shard.path))
        parts = PurePosixPath(url.path.rstrip("/")).parts or (url.hostname or "",)
    else:
        parts = Path(str(shard.path)).resolve().parts
    parts = tuple(part for part in parts if part != "/")
    if shard.kind == "folder":
        return f"{parts[-1] if parts else ''}#{shard.name}"
    return "/".join(parts[-2:])


def renamed(name: str, origin: str) -> str:
    """The name a shard of ``origin`` gets when ``OUT`` holds another shard called ``name``."""
    return f"{name}-{hashlib.sha256(origin.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def shard_fingerprint(shard: SourceShard, stages_fingerprint: str) -> dict[str, str]:
    """Identity of the work on one shard: a hash of its input bytes, and the parameters.

    Returns:
        ``{"input": SHA-256 of the input, "params": the stages' fingerprint, "fingerprint": hash of both and
        the shard's name and kind, "origin": see :func:`shard_origin` (not part of the hash: a moved input
        folder is still the same input)}``.

    Raises:
        CurationError: the shard cannot be read.
    """
    try:
        digest = shard_digest(shard)
    except OSError as err:
        raise CurationError(f"{shard.path}: cannot read shard {shard.name} ({err.strerror or err})") from None
    identity = {
        "name": shard.name,
        "kind": shard.kind,
        "members": list(shard.members),
        "input": digest,
        "params": stages_fingerprint,
    }
    fingerprint = hashlib.sha256(json_bytes(identity)).hexdigest()
    return {"input": digest, "params": stages_fingerprint, "fingerprint": fingerprint, "origin": shard_origin(shard)}


def read_marker(out: Path, name: str) -> dict[str, Any] | None:
    """The done marker of shard ``name`` when it and the shard's files are all there, else ``None``."""
    path = marker_path(out, name)
    if not path.is_file() or not (out / f"{name}.tar").is_file() or not (out / META_DIR / f"{name}.parquet").is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ShardReport.from_dict(raw["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return raw if isinstance(raw, dict) else None


def output_name(out: Path, shard: SourceShard, fingerprint: dict[str, str]) -> str:
    """The curated shard's name in ``out``: the source name, or a new one when that name is another input's.

    A finished shard of the same name is this input's when it has the same
    origin (markers written before origins were recorded count as the same) or
    the same input bytes.
    """
    raw = read_marker(out, shard.name)
    if raw is None or raw.get("input") == fingerprint["input"]:
        return shard.name
    if raw.get("origin", fingerprint["origin"]) == fingerprint["origin"]:
        return shard.name
    return renamed(shard.name, fingerprint["origin"])


def finished_report(out: Path, name: str, fingerprint: dict[str, str]) -> ShardReport | None:
    """The report of curated shard ``name`` when it was done with the same input and parameters, else ``None``."""
    raw = read_marker(out, name)
    if raw is None or raw.get("fingerprint") != fingerprint["fingerprint"]:
        return None
    return ShardReport.from_dict(raw["report"])


def replacement_reason(out: Path, name: str, fingerprint: dict[str, str]) -> str:
    """Why the finished shard ``name`` is about to be replaced; empty when there is none."""
    raw = read_marker(out, name)
    if raw is None:
        return ""
    return "parameters changed" if raw.get("input") == fingerprint["input"] else "input changed"


def check_output_location(input_dir: Path | Location, out: Path, shards: Sequence[SourceShard]) -> None:
    """Refuse an output directory that is the input directory, or where the run would write over an input file.

    Paths are compared with symbolic links resolved. An ``out`` inside the input
    directory (or the other way round) is fine as long as no file the run writes
    is an input file.

    Raises:
        CurationError: naming the input file that would be overwritten.
    """
    if is_url(input_dir):  # remote input, local output: they cannot overlap
        return
    source, target = Path(str(input_dir)).resolve(), Path(out).resolve()
    if source == target:
        raise CurationError(
            f"--out {out} is the input directory {input_dir}: curating would overwrite the source "
            "shards; choose another --out"
        )
    written = {(target / rel).resolve(): rel for rel in _written_names(shards)}
    for path in _input_files(shards, source):
        if path in written:
            raise CurationError(
                f"--out {out} would overwrite the input file {path} (as {written[path]}); choose another --out"
            )


def _written_names(shards: Sequence[SourceShard]) -> list[str]:
    """Every path, relative to the output directory, that curating ``shards`` may write or replace."""
    names = [MANIFEST, REPORT, LOCK, INDEX_NAME]
    for shard in shards:
        for name in (shard.name, renamed(shard.name, shard_origin(shard))):
            names += [
                f"{name}.tar",
                f"{META_DIR}/{name}.parquet",
                f"{META_DIR}/{name}.decisions.parquet",
                f"{META_DIR}/{name}.report.json",
            ]
    return names


def _input_files(shards: Sequence[SourceShard], source: Path) -> Iterator[Path]:
    """The resolved paths of the files the shards are read from (for folders: images and their sidecars)."""
    for shard in shards:
        if shard.kind != "folder":
            yield Path(str(shard.path)).resolve()
            continue
        for relative in shard.members:
            key = str(PurePosixPath(relative).with_suffix(""))
            for name in (relative, f"{key}.txt", f"{key}.json"):
                yield (source / name).resolve()


@contextmanager
def open_output(input_dir: Path | Location, out: Path, shards: Sequence[SourceShard]) -> Iterator[Path]:
    """Check, create and lock ``out`` for one curation run; the lock is held until the block ends.

    The lock is :func:`gadms.locks.writer_lock` on ``OUT/.lock``: the kernel drops it
    when the process ends, even by ``kill -9``, so a crashed run never blocks the next.

    Args:
        input_dir: the source directory.
        out: the curated output directory (created).
        shards: the source shards the run will curate.

    Yields:
        ``out``.

    Raises:
        CurationError: ``out`` is unsafe for this input (see :func:`check_output_location`), or another run holds it.
    """
    out = Path(out)
    check_output_location(input_dir, out, shards)
    with ExitStack() as held:
        try:
            held.enter_context(writer_lock(out, "gadms curate run"))
        except OutputBusy:
            raise CurationError(
                f"{out} is being curated by another {holder_text(out / LOCK)}; wait for it to finish or choose "
                "another --out"
            ) from None
        prepare_output(out)
        yield out


def prepare_output(out: Path) -> None:
    """Create ``out`` and delete temporary files an interrupted run left behind.

    Call once before shards are handed out, holding the lock of :func:`open_output`.
    """
    out = Path(out)
    (out / META_DIR).mkdir(parents=True, exist_ok=True)
    for folder in (out, out / META_DIR):
        for leftover in folder.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
