"""Build or extend an index: stream the gallery, skip what is indexed and unchanged, decode in threads, encode in
batches.

Memory is one batch of images plus the index's source records. Images that
cannot be decoded are skipped and counted by reason; the counts add up:
``found = already indexed + added + changed + skipped``. An indexed image
whose file stamp (size, modification time; see :mod:`gadms.search.sources`)
changed is encoded again and its row replaced in place, so row order stays;
rows of indexes written before stamps were recorded count as unchanged. Each
batch is committed (see :mod:`gadms.search.index`), so an interrupted build
keeps what it encoded and the next run goes on from there. Indexed sources
under a folder or curated gallery's root that the gallery no longer holds are
counted as gone, and removed with ``prune``. Above ``approx_threshold`` rows
the FAISS index is trained (or extended with the new rows; trained again after
rows changed or were pruned) and its ``nprobe`` tuned.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gadms.data.pipeline import image_transform
from gadms.model.backbone import BACKBONES
from gadms.safe_files import UnsafeFile, decode_image, open_image_file
from gadms.search.index import (
    EMBEDDINGS_FILE,
    META_FILE,
    SOURCES_FILE,
    IndexMeta,
    check_model,
    drop_rows,
    map_embeddings,
    read_meta,
    read_records,
    write_meta,
    write_records,
)
from gadms.search.model import SearchError, SearchModel
from gadms.search.ranking import (
    APPROX_FILE,
    ApproximateIndex,
    default_nlist,
    probe_queries_from,
    train_approximate,
    tune_nprobe,
)
from gadms.search.sources import Gallery, GalleryItem, record_stamp
from gadms.search.text_encoder import text_encoder_digest, write_text_encoder

APPROX_THRESHOLD = 100_000
MAX_EXAMPLES = 3


@dataclass
class BuildReport:
    """What one build did.

    Attributes:
        found: gallery items in the source.
        already: of those, items already in the index and unchanged (not encoded again).
        added: items encoded and appended.
        changed: indexed items whose file changed, encoded again (their rows replaced in place).
        skipped: items that could not be decoded, by reason.
        examples: ``"SOURCE: reason"`` for the first few skipped items.
        gone: indexed items under the gallery's root that it no longer holds.
        gone_examples: the first few of their sources.
        pruned: rows removed because they were gone (only with ``prune``).
        count: rows in the index afterwards.
        approximate: the approximate index's settings (None below the threshold).
        seconds: wall time of the encoding.
    """

    found: int = 0
    already: int = 0
    added: int = 0
    changed: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    gone: int = 0
    gone_examples: list[str] = field(default_factory=list)
    pruned: int = 0
    count: int = 0
    approximate: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The counts as a JSON-ready dict (stored as ``last_build`` without the time)."""
        return {
            "found": self.found,
            "already_indexed": self.already,
            "added": self.added,
            "changed": self.changed,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": self.examples,
            "gone": self.gone,
            "pruned": self.pruned,
        }


@dataclass
class _Rows:
    """The index's records while it is built: row of each source, sources met in this run."""

    records: list[dict]
    row_of: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.row_of = {r["source"]: row for row, r in enumerate(self.records)}


def build_index(
    directory: Path,
    gallery: Gallery,
    searcher: SearchModel,
    batch: int = 64,
    workers: int = 2,
    approx_threshold: int = APPROX_THRESHOLD,
    seed: int = 0,
    progress: bool = True,
    prune: bool = False,
) -> BuildReport:
    """Create the index at ``directory``, add the gallery's new items and re-encode its changed ones.

    Args:
        directory: the index directory (created when missing).
        gallery: the items to index.
        searcher: the model; an existing index must have been built with the same weights.
        batch: images encoded at once.
        workers: threads decoding images.
        approx_threshold: rows from which the approximate index is built.
        seed: seeds the approximate index's training sample and probe queries.
        progress: show a progress bar.
        prune: remove the indexed items under the gallery's root that it no longer holds.

    Returns:
        The report.

    Raises:
        SearchError: the index was built with another model, or is damaged.
    """
    directory = Path(directory)
    meta, records = _open_for_writing(directory, searcher)
    rows, report, started = _Rows(records), BuildReport(), time.perf_counter()
    transform = image_transform(searcher.model.arch.image_height, searcher.model.arch.image_width)
    bar = tqdm(total=gallery.total, desc=f"indexing {gallery.description}", unit="img", disable=not progress)
    with ThreadPoolExecutor(max(1, workers)) as pool, open(directory / EMBEDDINGS_FILE, "r+b") as emb:
        for items in _batches(_pending(gallery.items, rows, report), batch):
            decoded = list(pool.map(lambda pending: _decode(pending[0], transform), items))
            kept = [(item, row, tensor) for (item, row), (tensor, _) in zip(items, decoded) if tensor is not None]
            _count_skipped(report, [item for item, _ in items], decoded)
            if kept:
                _write_batch(directory, emb, searcher, kept, meta, rows, report)
            bar.update(len(items))
            bar.set_postfix(added=report.added, changed=report.changed, skipped=sum(report.skipped.values()))
    bar.update(report.already)
    bar.close()
    report.seconds = time.perf_counter() - started
    if report.changed:
        write_records(directory, rows.records)  # the new stamps of the rows encoded again
    _finish(directory, meta, rows, report, gallery.root, prune)
    meta.approximate = _update_approximate(directory, meta, meta.count - report.added, approx_threshold, seed)
    meta.last_build = report.to_json()
    if text_encoder_digest(directory) != searcher.identity.digest:  # what queries load (indexes before it: added)
        write_text_encoder(directory, searcher.model, searcher.identity.digest)
    write_meta(directory, meta)
    report.count, report.approximate = meta.count, meta.approximate
    return report


def _open_for_writing(directory: Path, searcher: SearchModel) -> tuple[IndexMeta, list[dict]]:
    """An existing index's metadata and records (after checking the model and the files and cutting uncommitted
    bytes), or a new one's.
    """
    if not (directory / META_FILE).is_file():
        directory.mkdir(parents=True, exist_ok=True)
        meta = IndexMeta(searcher.identity, BACKBONES[searcher.model.arch.backbone].embed_dim)
        for name in (EMBEDDINGS_FILE, SOURCES_FILE):
            (directory / name).write_bytes(b"")
        write_meta(directory, meta)
        return meta, []
    meta = read_meta(directory)
    check_model(meta, searcher.identity, directory)
    map_embeddings(directory, meta)  # raises when committed rows are missing
    records = read_records(directory, meta.count)
    _truncate(directory, meta)
    return meta, records


def _truncate(directory: Path, meta: IndexMeta) -> None:
    """Cut both data files back to the committed rows (left over by an interrupted build)."""
    for name in (EMBEDDINGS_FILE, SOURCES_FILE):
        open(directory / name, "ab").close()  # an empty index may lack them
    with open(directory / EMBEDDINGS_FILE, "r+b") as handle:
        handle.truncate(meta.count * meta.embed_dim * 4)
    with open(directory / SOURCES_FILE, "r+b") as handle:
        offset = 0
        for _ in range(meta.count):
            offset += len(handle.readline())
        handle.truncate(offset)


def _pending(
    items: Iterator[GalleryItem], rows: _Rows, report: BuildReport
) -> Iterator[tuple[GalleryItem, int | None]]:
    """``(item, None)`` for items not indexed yet, ``(item, row)`` for indexed items whose stamp changed; each
    source once. Counts found and already indexed.
    """
    for item in items:
        report.found += 1
        if item.source in rows.seen:
            report.already += 1
            continue
        rows.seen.add(item.source)
        row = rows.row_of.get(item.source)
        if row is not None and not _changed(item, rows.records[row]):
            report.already += 1
            continue
        yield item, row


def _changed(item: GalleryItem, record: dict) -> bool:
    """Whether an indexed item's file changed (unknown stamps, old indexes' rows included, count as unchanged)."""
    old = record_stamp(record)
    return old is not None and item.stamp is not None and old != item.stamp


def _batches(items: Iterator, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    while chunk := list(islice(items, size)):
        yield chunk


def _decode(item: GalleryItem, transform) -> tuple[torch.Tensor | None, str]:
    """``(image tensor, "")``, or ``(None, reason)`` when the image cannot be used."""
    try:  # one way in for every file: regular files under the gallery's root, byte and pixel caps (safe_files)
        if item.data is not None:
            return transform(decode_image(item.data, item.source)), ""
        return transform(open_image_file(item.path or item.source, item.root)), ""
    except UnsafeFile as exc:
        return None, exc.reason.replace("_", " ")


def _count_skipped(report: BuildReport, items: list[GalleryItem], decoded: list[tuple]) -> None:
    """Add the batch's undecodable items to the report."""
    for item, (tensor, reason) in zip(items, decoded):
        if tensor is None:
            report.skipped[reason] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(f"{item.source}: {reason}")


@torch.no_grad()
def _write_batch(
    directory: Path,
    emb,
    searcher: SearchModel,
    kept: list[tuple[GalleryItem, int | None, torch.Tensor]],
    meta: IndexMeta,
    rows: _Rows,
    report: BuildReport,
) -> None:
    """Encode one batch: overwrite the changed rows in place, append the new rows and source lines, commit."""
    images = torch.stack([tensor for _, _, tensor in kept]).to(searcher.device)
    vectors = searcher.model.embed_images(images).float().cpu().numpy().astype("<f4")
    changed = [(item, row, vector) for (item, row, _), vector in zip(kept, vectors) if row is not None]
    new = [(item, vector) for (item, row, _), vector in zip(kept, vectors) if row is None]
    if changed and meta.approximate:
        _drop_approximate(directory, meta)  # its vectors of the changed rows would be stale
    for item, row, vector in changed:
        emb.seek(row * meta.embed_dim * 4)
        emb.write(vector.tobytes())
        rows.records[row] = item.record()  # written to sources.jsonl at the end of the build
    if new:
        _append(directory, emb, meta, rows, new)
    emb.flush()
    meta.count += len(new)
    report.added, report.changed = report.added + len(new), report.changed + len(changed)
    write_meta(directory, meta)


def _append(directory: Path, emb, meta: IndexMeta, rows: _Rows, new: list[tuple[GalleryItem, np.ndarray]]) -> None:
    """Write new rows after the committed ones and their source lines after the committed lines."""
    emb.seek(meta.count * meta.embed_dim * 4)
    emb.write(b"".join(vector.tobytes() for _, vector in new))
    lines = [item.record() for item, _ in new]
    with open(directory / SOURCES_FILE, "a", encoding="utf-8") as src:
        src.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    rows.records += lines


def _drop_approximate(directory: Path, meta: IndexMeta) -> None:
    """Remove the FAISS index and commit its absence (it is trained again at the end of the build)."""
    (directory / APPROX_FILE).unlink(missing_ok=True)
    meta.approximate = None
    write_meta(directory, meta)


def _finish(directory: Path, meta: IndexMeta, rows: _Rows, report: BuildReport, root: str | None, prune: bool) -> None:
    """Count the indexed items under ``root`` that the gallery no longer holds; remove them with ``prune``."""
    if root is None:
        return
    gone = [row for row, r in enumerate(rows.records) if r["source"].startswith(root) and r["source"] not in rows.seen]
    report.gone = len(gone)
    report.gone_examples = [rows.records[row]["source"] for row in gone[:MAX_EXAMPLES]]
    if prune and gone:
        rows.records = drop_rows(directory, meta, rows.records, gone)
        report.pruned = len(gone)


def _update_approximate(directory: Path, meta: IndexMeta, previous: int, threshold: int, seed: int) -> dict | None:
    """Train, extend or drop the FAISS index so that it matches the committed rows (none for an empty index)."""
    path = directory / APPROX_FILE
    if meta.count < max(threshold, 1):
        path.unlink(missing_ok=True)
        return None
    gallery = map_embeddings(directory, meta)
    approx = _reusable_approximate(directory, meta, previous)
    if approx is None:
        approx = train_approximate(gallery, seed=seed)
    elif previous < meta.count:
        approx.add(gallery[previous:])
    tune_nprobe(approx, gallery, probe_queries_from(gallery, seed=seed))
    approx.save(directory)
    return approx.meta()


def _reusable_approximate(directory: Path, meta: IndexMeta, previous: int) -> ApproximateIndex | None:
    """The existing FAISS index when it holds exactly the first ``previous`` rows and its cells still fit."""
    if not meta.approximate or not (directory / APPROX_FILE).is_file():
        return None
    try:
        approx = ApproximateIndex.load(directory, meta.approximate)
    except SearchError:
        return None  # damaged: trained again
    if approx.count != previous or approx.dim != meta.embed_dim or default_nlist(meta.count) > 2 * approx.nlist:
        return None  # out of step with the rows, or the gallery outgrew its cells: train again
    return approx
