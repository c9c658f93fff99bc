"""Build or extend an index: stream the gallery, skip what is indexed, decode in threads, encode in batches.

Memory is one batch of images plus the set of indexed source strings. Images
that cannot be decoded are skipped and counted by reason; the counts add up:
``found = already indexed + added + skipped``. Each batch is committed (see
:mod:`gadms.search.index`), so an interrupted build keeps what it encoded and
the next run goes on from there. Above ``approx_threshold`` rows the FAISS
index is trained (or extended with the new rows) and its ``nprobe`` tuned.
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

import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from gadms.data.pipeline import image_transform, open_image
from gadms.model.backbone import BACKBONES
from gadms.search.index import (
    EMBEDDINGS_FILE,
    META_FILE,
    SOURCES_FILE,
    IndexMeta,
    check_model,
    read_meta,
    read_records,
    write_meta,
)
from gadms.search.model import SearchModel
from gadms.search.ranking import (
    APPROX_FILE,
    ApproximateIndex,
    default_nlist,
    probe_queries_from,
    train_approximate,
    tune_nprobe,
)
from gadms.search.sources import Gallery, GalleryItem

APPROX_THRESHOLD = 100_000
MAX_EXAMPLES = 3


@dataclass
class BuildReport:
    """What one build did.

    Attributes:
        found: gallery items in the source.
        already: of those, items already in the index (not encoded again).
        added: items encoded and appended.
        skipped: items that could not be decoded, by reason.
        examples: ``"SOURCE: reason"`` for the first few skipped items.
        count: rows in the index afterwards.
        approximate: the approximate index's settings (None below the threshold).
        seconds: wall time of the encoding.
    """

    found: int = 0
    already: int = 0
    added: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    count: int = 0
    approximate: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The counts as a JSON-ready dict (stored as ``last_build`` without the time)."""
        return {
            "found": self.found,
            "already_indexed": self.already,
            "added": self.added,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": self.examples,
        }


def build_index(
    directory: Path,
    gallery: Gallery,
    searcher: SearchModel,
    batch: int = 64,
    workers: int = 2,
    approx_threshold: int = APPROX_THRESHOLD,
    seed: int = 0,
    progress: bool = True,
) -> BuildReport:
    """Create the index at ``directory`` or add the gallery's new items to it.

    Args:
        directory: the index directory (created when missing).
        gallery: the items to index.
        searcher: the model; an existing index must have been built with the same weights.
        batch: images encoded at once.
        workers: threads decoding images.
        approx_threshold: rows from which the approximate index is built.
        seed: seeds the approximate index's training sample and probe queries.
        progress: show a progress bar.

    Returns:
        The report.

    Raises:
        SearchError: the index was built with another model, or is damaged.
    """
    directory = Path(directory)
    meta = _open_for_writing(directory, searcher)
    known = {r["source"] for r in read_records(directory, meta.count)}
    report, started = BuildReport(), time.perf_counter()
    transform = image_transform(searcher.model.arch.image_height, searcher.model.arch.image_width)
    bar = tqdm(total=gallery.total, desc=f"indexing {gallery.description}", unit="img", disable=not progress)
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        open(directory / EMBEDDINGS_FILE, "ab") as emb,
        open(directory / SOURCES_FILE, "a", encoding="utf-8") as src,
    ):
        for items in _batches(_new_items(gallery.items, known, report), batch):
            decoded = list(pool.map(lambda item: _decode(item, transform), items))
            kept = [(item, tensor) for item, (tensor, _) in zip(items, decoded) if tensor is not None]
            _count_skipped(report, items, decoded)
            if kept:
                _append(emb, src, searcher, kept)
                meta.count += len(kept)
                report.added += len(kept)
                write_meta(directory, meta)
            bar.update(len(items))
            bar.set_postfix(added=report.added, skipped=sum(report.skipped.values()), already=report.already)
    bar.update(report.already)
    bar.close()
    report.seconds = time.perf_counter() - started
    meta.approximate = _update_approximate(directory, meta, meta.count - report.added, approx_threshold, seed)
    meta.last_build = report.to_json()
    write_meta(directory, meta)
    report.count, report.approximate = meta.count, meta.approximate
    return report


def _open_for_writing(directory: Path, searcher: SearchModel) -> IndexMeta:
    """An existing index's metadata (after checking the model and cutting uncommitted bytes), or a new one."""
    if not (directory / META_FILE).is_file():
        directory.mkdir(parents=True, exist_ok=True)
        meta = IndexMeta(searcher.identity, BACKBONES[searcher.model.arch.backbone].embed_dim)
        for name in (EMBEDDINGS_FILE, SOURCES_FILE):
            (directory / name).write_bytes(b"")
        write_meta(directory, meta)
        return meta
    meta = read_meta(directory)
    check_model(meta, searcher.identity, directory)
    _truncate(directory, meta)
    return meta


def _truncate(directory: Path, meta: IndexMeta) -> None:
    """Cut both data files back to the committed rows (left over by an interrupted build)."""
    with open(directory / EMBEDDINGS_FILE, "r+b") as handle:
        handle.truncate(meta.count * meta.embed_dim * 4)
    with open(directory / SOURCES_FILE, "r+b") as handle:
        offset = 0
        for _ in range(meta.count):
            offset += len(handle.readline())
        handle.truncate(offset)


def _new_items(items: Iterator[GalleryItem], known: set[str], report: BuildReport) -> Iterator[GalleryItem]:
    """The items whose source is not indexed yet (each source once); counts found and already indexed."""
    for item in items:
        report.found += 1
        if item.source in known:
            report.already += 1
            continue
        known.add(item.source)
        yield item


def _batches(items: Iterator[GalleryItem], size: int) -> Iterator[list[GalleryItem]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    while chunk := list(islice(items, size)):
        yield chunk


def _decode(item: GalleryItem, transform) -> tuple[torch.Tensor | None, str]:
    """``(image tensor, "")``, or ``(None, reason)`` when the image cannot be used."""
    try:
        source = item.data if item.data is not None else item.path
        assert source is not None
        return transform(open_image(source)), ""
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError:
        return None, "too many pixels"
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data, missing file
        return None, "missing file" if isinstance(exc, FileNotFoundError) else "corrupt image"


def _count_skipped(report: BuildReport, items: list[GalleryItem], decoded: list[tuple]) -> None:
    """Add the batch's undecodable items to the report."""
    for item, (tensor, reason) in zip(items, decoded):
        if tensor is None:
            report.skipped[reason] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(f"{item.source}: {reason}")


@torch.no_grad()
def _append(emb, src, searcher: SearchModel, kept: list[tuple[GalleryItem, torch.Tensor]]) -> None:
    """Encode one batch and append its rows and source lines."""
    images = torch.stack([tensor for _, tensor in kept]).to(searcher.device)
    rows = searcher.model.embed_images(images).float().cpu().numpy().astype("<f4")
    emb.write(rows.tobytes())
    src.write("".join(json.dumps(item.record(), ensure_ascii=False) + "\n" for item, _ in kept))
    emb.flush()
    src.flush()


def _update_approximate(directory: Path, meta: IndexMeta, previous: int, threshold: int, seed: int) -> dict | None:
    """Train, extend or drop the FAISS index so that it matches the committed rows."""
    from gadms.search.index import map_embeddings

    path = directory / APPROX_FILE
    if meta.count < threshold:
        path.unlink(missing_ok=True)
        return None
    gallery = map_embeddings(directory, meta)
    approx = None
    if meta.approximate and path.is_file():
        approx = ApproximateIndex.load(directory, meta.approximate)
        if approx.count != previous or default_nlist(meta.count) > 2 * approx.nlist:
            approx = None  # out of step with the rows, or the gallery outgrew its cells: train again
    if approx is None:
        approx = train_approximate(gallery, seed=seed)
    elif previous < meta.count:
        approx.add(gallery[previous:])
    tune_nprobe(approx, gallery, probe_queries_from(gallery, seed=seed))
    approx.save(directory)
    return approx.meta()
