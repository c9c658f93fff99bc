"""The curation run: source shards -> detection -> filter -> crops -> captions -> curated shards.

Each source shard becomes one curated shard of the same name (unless ``OUT``
holds a shard of that name from another input: see :mod:`gadms.curation.output`), processed on its
own (so shards can fan out over threads or a Dask cluster) and written
atomically: ``OUT/NAME.tar`` (per person ``KEY.jpg`` crop + ``KEY.json``),
``OUT/meta/NAME.parquet`` (manifest rows), ``OUT/meta/NAME.decisions.parquet``
(every box with its decision) and, last, ``OUT/meta/NAME.report.json``, the
shard's done marker. A rerun skips shards whose marker matches a hash of the
input shard's bytes and the parameters; a killed run leaves at most temporary
files, so the restart writes the same bytes as an uninterrupted run.
:func:`finalize_curation` joins the per-shard files of every finished shard in
``OUT`` (this run's and earlier runs': curating new input shards into an existing
corpus adds to it) into ``OUT/manifest.parquet`` (streamed, one shard at a time),
``OUT/_shards.parquet`` (the corpus index: each shard's bytes and caption count)
and ``OUT/report.json``.

One run at a time writes to an ``OUT``: :func:`open_output` takes an exclusive
lock on ``OUT/.lock`` and refuses an ``OUT`` from which the run would overwrite
any input file.

Everything written is a function of the input bytes, the parameters and the
seed (timings are returned, never written), so the DVC hash of ``OUT`` is
reproducible.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from gadms.config import Params
from gadms.curation.decoding import ImageDecodeError, decode_image, open_image
from gadms.curation.detect import BadDetectionRecord, Detector, build_detector, precomputed_detections
from gadms.curation.filter import KEEP, crop_box, crop_image, filter_decision, visible_keypoints
from gadms.curation.output import (
    MANIFEST,
    META_DIR,
    REPORT,
    CurationError,
    finished_report,
    marker_path,
    open_output,
    output_name,
    read_marker,
    replacement_reason,
    shard_fingerprint,
)
from gadms.curation.records import CaptionRequest, CaptionResult, PersonDetection, SourceRecord, SourceShard, Template
from gadms.curation.report import CurationReport, ShardReport
from gadms.curation.sources import iter_source, list_source_shards
from gadms.data.corpus_index import curated_index_entry, write_corpus_index
from gadms.shards import ShardWriter, atomic_path, jpeg_bytes, json_bytes, write_bytes_atomic
from gadms.storage import Location, location

CAPTION_FAILED = "caption_failed"
BAD_DETECTIONS = "bad_detections"
CAPTION_BATCH = 64
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_BASE_CHARS = 48  # readable part of a curated key; the hash after it keeps keys unique (tar names stay short)
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class _Crop:
    """A person who passed the filter, waiting for captions."""

    key: str
    shard: str
    record: SourceRecord
    person_index: int
    person: PersonDetection
    box: tuple[int, int, int, int]
    jpeg: bytes
    templates: tuple[Template, ...]
    seed: int


class CurationStages:
    """The models and templates a curation run needs, built once and shared by the shards of a process."""

    def __init__(self, params: Params):
        self.params = params
        self.detector: Detector = build_detector(params.curation.detector)
        self.templates = _load_templates(params)
        self.captioner = build_captioner(params)
        self._lock = threading.Lock()  # models are not guaranteed to be thread-safe

    def detect(self, images: Sequence[np.ndarray], records: Sequence[SourceRecord]) -> list[list[PersonDetection]]:
        """Detections per image, one batch at a time."""
        with self._lock:
            return self.detector.detect(images, records)

    def fingerprint(self) -> str:
        """Hash of everything besides the input that decides the output bytes."""
        curation = self.params.curation.model_dump(mode="json")
        for key in ("batch_size", "device"):  # how inference runs, not what it finds
            curation["detector"].pop(key)
        curation["captioning"].pop("concurrency")
        templates = [[t.id, t.text] for t in self.templates]
        return hashlib.sha256(
            json_bytes({"seed": self.params.seed, "curation": curation, "templates": templates})
        ).hexdigest()


def build_captioner(params: Params) -> Any:
    """The captioner named by ``curation.captioning.backend`` (``attributes`` offline, ``vlm`` over HTTP)."""
    cfg = params.curation.captioning
    if cfg.backend == "vlm":
        from gadms.curation.vlm import VlmCaptioner

        return VlmCaptioner(cfg)
    from gadms.curation.attribute_captions import AttributeCaptioner

    return AttributeCaptioner(cfg)


def captioner_name(params: Params) -> str:
    """What wrote the captions, stored with each sample."""
    cfg = params.curation.captioning
    return f"vlm:{cfg.vlm_model}" if cfg.backend == "vlm" else "attributes"


def _load_templates(params: Params) -> list[Template]:
    from gadms.curation.templates import default_templates, load_templates

    path = params.curation.captioning.templates_file
    templates = load_templates(path) if path is not None else default_templates()
    if not templates:
        raise CurationError(f"no caption templates in {path or 'the built-in templates'}")
    return templates


_STAGES: dict[str, CurationStages] = {}
_STAGES_LOCK = threading.Lock()


def stages_for(params: Params) -> CurationStages:
    """The (cached, per process) :class:`CurationStages` of ``params``."""
    key = hashlib.sha256(json_bytes(params.model_dump(mode="json"))).hexdigest()
    with _STAGES_LOCK:
        if key not in _STAGES:
            _STAGES[key] = CurationStages(params)
        return _STAGES[key]


def sample_seed(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the run seed and the given identifiers."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def choose_templates(templates: Sequence[Template], count: int, rng: np.random.Generator) -> tuple[Template, ...]:
    """``count`` distinct templates (repeats only when there are fewer templates than captions)."""
    picks = rng.choice(len(templates), size=count, replace=len(templates) < count)
    return tuple(templates[int(i)] for i in picks)


def curated_key(shard: str, source_key: str, person_index: int, used: set[str]) -> str:
    """A WebDataset-safe key for one person crop, unique in the corpus and the same on every run.

    ``BASE_HASH_INDEX``: the source key with unsafe characters replaced (cut to
    48 characters, for reading), 16 hex digits of SHA-256 of the exact shard name
    and source key (so ``a b`` and ``a+b`` differ), and the person's index. No dots
    or slashes; at most about 70 characters, whatever the source key.

    Args:
        shard: the source shard's name.
        source_key: the sample's key in its source shard.
        person_index: the person's index among the sample's detections.
        used: keys already given in this shard (a clash of the hash, never seen in practice, gets a suffix).

    Returns:
        The key.
    """
    base = _KEY_UNSAFE.sub("_", source_key).strip("_")[:_KEY_BASE_CHARS].strip("_") or "sample"
    digest = hashlib.sha256(f"{shard}/{source_key}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    key, n = f"{base}_{digest}_{person_index}", 1
    while key in used:
        key, n = f"{base}_{digest}_{person_index}_{n}", n + 1
    used.add(key)
    return key


def curate_shard(shard: SourceShard, out: Path, params: Params, progress: bool = False) -> ShardReport:
    """Curate one source shard into ``out`` (skipped when already done with the same input and params).

    Args:
        shard: the source shard.
        out: the curated output directory.
        params: all parameters (``curation`` and ``seed`` are used).
        progress: show a progress bar over the shard's samples.

    Returns:
        The shard's report.
    """
    if not _SHARD_NAME.match(shard.name):
        raise CurationError(f"{shard.path}: shard name {shard.name!r} is not a plain file name")
    out = Path(out)
    stages = stages_for(params)
    fingerprint = shard_fingerprint(shard, stages.fingerprint())
    name = output_name(out, shard, fingerprint)
    done = finished_report(out, name, fingerprint)
    if done is not None:
        return done
    report = ShardReport(name, replaced=replacement_reason(out, name, fingerprint))
    report.source_name = "" if name == shard.name else shard.name
    manifest: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    used: set[str] = set()
    source = params.curation.source
    records = iter_source(shard, report.problems, source.max_member_bytes, source.max_row_group_bytes)
    bar = tqdm(desc=f"curate {shard.name}", unit="img", disable=not progress, leave=False)
    with ShardWriter(out / f"{name}.tar") as tar:
        for batch in _batches(records, stages, report):
            crops = _detect_and_crop(batch, shard, stages, report, decisions, used)
            _caption_and_write(crops, batch, stages, tar, report, manifest)
            bar.update(len(batch))
            del batch, crops  # free the decoded pixels before the next batch is decoded
    bar.close()
    meta = out / META_DIR
    write_bytes_atomic(meta / f"{name}.parquet", _parquet_bytes(manifest, MANIFEST_SCHEMA))
    write_bytes_atomic(meta / f"{name}.decisions.parquet", _parquet_bytes(decisions, DECISIONS_SCHEMA))
    assert report.seen == report.kept + report.rejected + report.failed, report
    write_bytes_atomic(marker_path(out, name), json_bytes({**fingerprint, "report": report.to_dict()}))
    return report


def _batches(
    records: Iterable[SourceRecord], stages: CurationStages, report: ShardReport
) -> Iterator[list[tuple[SourceRecord, np.ndarray | None]]]:
    """Decode records into batches of ``(record, image)``; unusable records come with ``None``.

    A batch holds at most ``detector.batch_size`` images and at most
    ``source.max_image_pixels`` decoded pixels in all (one image up to the cap
    makes a batch of its own), so memory does not grow with the batch size.
    """
    size, budget = stages.params.curation.detector.batch_size, stages.params.curation.source.max_image_pixels
    batch: list[tuple[SourceRecord, np.ndarray | None]] = []
    pixels = 0
    it = iter(records)
    while True:
        start = time.perf_counter()
        record = next(it, None)
        if record is None:
            break
        report.seen += 1
        if batch and pixels + _announced_pixels(record) > budget:  # hand the batch on before decoding more
            yield batch
            batch, pixels = [], 0
            start = time.perf_counter()
        record, image = _decoded(record, stages)
        report.timings["read_decode"] += time.perf_counter() - start
        area = 0 if image is None else image.shape[0] * image.shape[1]
        batch.append((record, image))
        pixels += area
        if len(batch) == size:
            yield batch
            batch, pixels = [], 0
    if batch:
        yield batch


def _announced_pixels(record: SourceRecord) -> int:
    """Width * height from the image header (nothing is decoded); 0 when there is no readable header."""
    if record.error is not None or not record.image:
        return 0
    try:
        with open_image(io.BytesIO(record.image)) as image:
            return image.size[0] * image.size[1]
    except Exception:  # noqa: BLE001  (Pillow raises assorted types; decode_image reports what is wrong)
        return 0


def _decoded(record: SourceRecord, stages: CurationStages) -> tuple[SourceRecord, np.ndarray | None]:
    """The record with its pixels, or the record turned failed (undecodable image, malformed detections)."""
    if record.error is not None or record.image is None:
        return record, None
    if stages.params.curation.detector.backend == "precomputed":
        try:
            precomputed_detections(record.meta)
        except BadDetectionRecord as err:
            detail = f"{record.key}: {err}"
            return SourceRecord(record.key, None, record.text, record.meta, BAD_DETECTIONS, detail), None
    try:
        return record, decode_image(record.image, stages.params.curation.source.max_image_pixels)
    except ImageDecodeError as err:
        return SourceRecord(record.key, None, record.text, record.meta, err.reason, err.detail), None


def _detect_and_crop(
    batch: list[tuple[SourceRecord, np.ndarray | None]],
    shard: SourceShard,
    stages: CurationStages,
    report: ShardReport,
    decisions: list[dict[str, Any]],
    used: set[str],
) -> list[_Crop]:
    """Detect, filter and crop the people of a batch; record every decision (``used``: the shard's keys so far)."""
    usable = [(r, im) for r, im in batch if im is not None]
    start = time.perf_counter()
    found = stages.detect([im for _, im in usable], [r for r, _ in usable])
    report.timings["detect"] += time.perf_counter() - start
    start = time.perf_counter()
    params = stages.params
    crops: list[_Crop] = []
    crop_seconds = 0.0
    for (record, image), people in zip(usable, found):
        assert image is not None
        for index, person in enumerate(people):
            decision = filter_decision(person, params.curation.filter)
            decisions.append(_decision_row(record.key, index, person, decision, params))
            report.boxes[decision] += 1
            if decision != KEEP:
                continue
            rng = sample_seed(params.seed, report.shard, record.key, index)  # the curated name: unique in OUT
            templates = choose_templates(stages.templates, params.curation.captioning.captions_per_image, rng)
            crop_start = time.perf_counter()
            box = crop_box(person.box, params.curation.crop.margin, image.shape[1], image.shape[0])
            jpeg = jpeg_bytes(np.ascontiguousarray(crop_image(image, box)), params.curation.crop.jpeg_quality)
            crop_seconds += time.perf_counter() - crop_start
            key = curated_key(report.shard, record.key, index, used)
            crops.append(_Crop(key, shard.name, record, index, person, box, jpeg, templates, int(rng.integers(2**31))))
    report.timings["crop_encode"] += crop_seconds
    report.timings["filter"] += time.perf_counter() - start - crop_seconds
    return crops


def _caption_and_write(
    crops: list[_Crop],
    batch: list[tuple[SourceRecord, np.ndarray | None]],
    stages: CurationStages,
    tar: ShardWriter,
    report: ShardReport,
    manifest: list[dict[str, Any]],
) -> None:
    """Caption the batch's crops, write the captioned ones, and count every sample of the batch."""
    start = time.perf_counter()
    requests = [CaptionRequest(c.key, c.jpeg, c.templates, c.person.attributes, c.seed) for c in crops]
    results: list[CaptionResult] = []
    for i in range(0, len(requests), CAPTION_BATCH):
        results.extend(stages.captioner.caption(requests[i : i + CAPTION_BATCH]))
    report.timings["caption"] += time.perf_counter() - start
    start = time.perf_counter()
    written: Counter = Counter()
    caption_failures: dict[str, str] = {}
    for crop, result in zip(crops, results):
        if result.captions is None:
            report.boxes[KEEP] -= 1
            report.boxes[CAPTION_FAILED] += 1
            caption_failures.setdefault(crop.record.key, result.error or CAPTION_FAILED)
            continue
        meta = _sample_json(crop, result.captions, stages.params)
        tar.add(f"{crop.key}.jpg", crop.jpeg)
        tar.add(f"{crop.key}.json", json_bytes(meta))
        manifest.append(_manifest_row(crop, result.captions))
        written[crop.record.key] += 1
        report.crops += 1
        report.captions += len(result.captions)
    for record, image in batch:
        if record.error is not None or image is None:
            report.fail(record.error or "unreadable", record.key, record.detail)
        elif written[record.key]:
            report.kept += 1
        elif record.key in caption_failures:
            report.fail(CAPTION_FAILED, record.key, caption_failures[record.key])
        else:
            report.rejected += 1
    report.boxes = +report.boxes  # drop zero counts
    report.timings["write"] += time.perf_counter() - start


def _rounded(values: Iterable[float], digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def _sample_json(crop: _Crop, captions: list[str], params: Params) -> dict[str, Any]:
    """The ``KEY.json`` of a curated sample."""
    x0, y0, x1, y1 = crop.box
    return {
        "captions": captions,
        "template_ids": [t.id for t in crop.templates],
        "source_key": crop.record.key,
        "source_shard": crop.shard,
        "person_index": crop.person_index,
        "box": _rounded(crop.person.box),
        "crop_box": [x0, y0, x1, y1],
        "crop_size": [x1 - x0, y1 - y0],
        "score": round(crop.person.score, 4),
        "keypoints": [_rounded(k, 3) for k in np.asarray(crop.person.keypoints)],
        "captioner": captioner_name(params),
    }


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source_key", pa.string()),
        ("person_index", pa.int32()),
        ("crop_width", pa.int32()),
        ("crop_height", pa.int32()),
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("captions", pa.list_(pa.string())),
        ("template_ids", pa.list_(pa.int32())),
    ]
)
DECISIONS_SCHEMA = pa.schema(
    [
        ("source_key", pa.string()),
        ("person_index", pa.int32()),
        ("decision", pa.string()),
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("visible_keypoints", pa.int32()),
    ]
)


def _manifest_row(crop: _Crop, captions: list[str]) -> dict[str, Any]:
    x0, y0, x1, y1 = crop.box
    return {
        "key": crop.key,
        "source_key": crop.record.key,
        "person_index": crop.person_index,
        "crop_width": x1 - x0,
        "crop_height": y1 - y0,
        "box": _rounded(crop.person.box),
        "score": round(crop.person.score, 4),
        "captions": captions,
        "template_ids": [t.id for t in crop.templates],
    }


def _decision_row(key: str, index: int, person: PersonDetection, decision: str, params: Params) -> dict[str, Any]:
    seen = visible_keypoints(person.keypoints, params.curation.filter.keypoint_confidence)
    return {
        "source_key": key,
        "person_index": index,
        "decision": decision,
        "box": _rounded(person.box),
        "score": round(person.score, 4),
        "visible_keypoints": int(seen.sum()),
    }


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows as a Parquet file with a fixed schema (the same rows give the same bytes)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# Rows per row group of manifest.parquet: what the streamed merge holds at once (about 0.4 GB at two long captions a
# row). Manifests up to this size keep the bytes of the earlier in-memory write (pyarrow's default, 1M rows).
MANIFEST_ROW_GROUP = 128 * 1024


def merge_manifests(paths: Sequence[Path], dest: Path, row_group_rows: int = MANIFEST_ROW_GROUP) -> int:
    """Append the per-shard manifests ``paths``, in order, into one Parquet file, written atomically.

    Streams: one shard's manifest and at most one output row group are in
    memory at a time, never the whole corpus. The bytes are those of
    ``pq.write_table(pa.concat_tables(tables), compression="zstd")`` (how the
    manifest was written before it streamed): each row group holds the same
    rows, cut from the same per-shard chunks, so a corpus keeps its DVC hash.

    Args:
        paths: the per-shard manifests (``OUT/meta/NAME.parquet``), in the corpus's order.
        dest: the merged manifest to write.
        row_group_rows: rows per row group (the last holds the rest).

    Returns:
        The number of rows written.

    Raises:
        CurationError: a manifest's columns differ from the first one's.
    """
    rows, pending, held = 0, [], 0
    with atomic_path(Path(dest)) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for path in paths:
                table = pq.read_table(path)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                if not table.schema.equals(writer.schema):
                    raise CurationError(f"{path}: its columns differ from the other shards' manifests")
                for piece in _row_group_pieces(table, row_group_rows, held):
                    pending.append(piece)
                    held += piece.num_rows
                    if held == row_group_rows:
                        writer.write_table(pa.concat_tables(pending), row_group_size=row_group_rows)
                        rows, pending, held = rows + held, [], 0
            writer = writer or pq.ParquetWriter(tmp, MANIFEST_SCHEMA, compression="zstd")
            if held or not rows:  # the rest; an empty corpus gets one empty row group, as write_table gives
                writer.write_table(_concat_or_empty(pending, writer.schema), row_group_size=row_group_rows)
                rows += held
        finally:
            if writer is not None:
                writer.close()
    return rows


def _row_group_pieces(table: pa.Table, row_group_rows: int, held: int) -> Iterator[pa.Table]:
    """``table`` cut where row groups end, the first row group already holding ``held`` rows."""
    start = 0
    while start < table.num_rows:
        size = min(row_group_rows - held, table.num_rows - start)
        yield table.slice(start, size)
        start, held = start + size, (held + size) % row_group_rows


def _concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def finalize_curation(out: Path, reports: Sequence[ShardReport], params: Params | None = None) -> CurationReport:
    """Join the manifests of every finished shard in ``out`` into ``manifest.parquet``, index the shards, report.

    Finished shards of earlier runs that are not among ``reports`` (other input
    curated into the same corpus) are kept and included, never deleted. The
    manifests are merged as a stream (:func:`merge_manifests`), so memory does
    not grow with the corpus. The corpus index ``_shards.parquet`` lists every
    finished shard with its bytes and caption count (see
    :mod:`gadms.data.corpus_index`); ``report.json`` is written last.

    Args:
        out: the curated output directory.
        reports: the reports of this run's shards (any order).
        params: this run's parameters, to tell which earlier shards were curated with other ones.

    Returns:
        The run's report, shards in name order (earlier shards marked ``earlier``).
    """
    out = Path(out)
    names = {r.shard for r in reports}
    own_params = stages_for(params).fingerprint() if params is not None else None
    earlier = []
    for marker in sorted((out / META_DIR).glob("*.report.json")):
        name = marker.name[: -len(".report.json")]
        raw = None if name in names or name.startswith(".") else read_marker(out, name)
        if raw is not None:
            kept = ShardReport.from_dict(raw["report"])
            kept.earlier = True
            kept.other_params = own_params is not None and raw.get("params") != own_params
            earlier.append(kept)
    ordered = sorted([*reports, *earlier], key=lambda r: r.shard)
    merge_manifests([out / META_DIR / f"{r.shard}.parquet" for r in ordered], out / MANIFEST)
    write_corpus_index(out, [curated_index_entry(out / f"{r.shard}.tar", r.captions) for r in ordered])
    report = CurationReport(out, ordered)
    write_bytes_atomic(out / REPORT, json_bytes(report.to_dict()))
    return report


def curate(
    input_dir: Path | str | Location,
    out: Path,
    params: Params,
    progress: bool = True,
    on_shard: Callable[[ShardReport], None] | None = None,
) -> CurationReport:
    """Curate every source shard of ``input_dir`` into ``out``, one shard after another.

    Args:
        input_dir: web shards (WebDataset tars, Parquet files or a folder of images), local or a URL.
        out: the curated output directory (created; finished shards of earlier runs in it are kept).
        params: all parameters.
        progress: show progress bars.
        on_shard: called with each shard's report as it finishes.

    Returns:
        The run's report.

    Raises:
        CurationError: ``out`` is unsafe for this input, or another run is writing to it.
    """
    source = params.curation.source
    shards = list_source_shards(location(input_dir), source.format, source.folder_shard_size)
    with open_output(location(input_dir), Path(out), shards):
        reports = []
        for shard in tqdm(shards, desc="curate", unit="shard", disable=not progress):
            report = curate_shard(shard, Path(out), params, progress=progress)
            reports.append(report)
            if on_shard is not None:
                on_shard(report)
        return finalize_curation(Path(out), reports, params)
