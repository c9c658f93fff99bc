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

import io
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from gadms.config import Params
from gadms.curation.decoding import ImageDecodeError, decode_image, open_image
from gadms.curation.detect import BadDetectionRecord, precomputed_detections
from gadms.curation.filter import KEEP, crop_box, crop_image, filter_decision
from gadms.curation.manifest import (
    DECISIONS_SCHEMA,
    MANIFEST_SCHEMA,
    decision_row,
    manifest_row,
    merge_manifests,
    parquet_bytes,
    sample_json,
)
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
from gadms.curation.records import CaptionRequest, CaptionResult, Crop, SourceRecord, SourceShard
from gadms.curation.report import CurationReport, ShardReport
from gadms.curation.sources import iter_source, list_source_shards
from gadms.curation.stages import CurationStages, choose_templates, curated_key, sample_seed, stages_for
from gadms.data.corpus_index import curated_index_entry, write_corpus_index
from gadms.reproducible_writes import ShardWriter, jpeg_bytes, json_bytes, write_bytes_atomic
from gadms.storage import Location, location

CAPTION_FAILED = "caption_failed"
BAD_DETECTIONS = "bad_detections"
CAPTION_BATCH = 64
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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
        for batch in decoded_batches(records, stages, report):
            crops = _detect_and_crop(batch, shard, stages, report, decisions, used)
            _caption_and_write(crops, batch, stages, tar, report, manifest)
            bar.update(len(batch))
            del batch, crops  # free the decoded pixels before the next batch is decoded
    bar.close()
    meta = out / META_DIR
    write_bytes_atomic(meta / f"{name}.parquet", parquet_bytes(manifest, MANIFEST_SCHEMA))
    write_bytes_atomic(meta / f"{name}.decisions.parquet", parquet_bytes(decisions, DECISIONS_SCHEMA))
    assert report.seen == report.kept + report.rejected + report.failed, report
    write_bytes_atomic(marker_path(out, name), json_bytes({**fingerprint, "report": report.to_dict()}))
    return report


def decoded_batches(
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
) -> list[Crop]:
    """Detect, filter and crop the people of a batch; record every decision (``used``: the shard's keys so far)."""
    usable = [(r, im) for r, im in batch if im is not None]
    start = time.perf_counter()
    found = stages.detect([im for _, im in usable], [r for r, _ in usable])
    report.timings["detect"] += time.perf_counter() - start
    start = time.perf_counter()
    params = stages.params
    crops: list[Crop] = []
    crop_seconds = 0.0
    for (record, image), people in zip(usable, found):
        assert image is not None
        for index, person in enumerate(people):
            decision = filter_decision(person, params.curation.filter)
            decisions.append(decision_row(record.key, index, person, decision, params))
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
            crops.append(Crop(key, shard.name, record, index, person, box, jpeg, templates, int(rng.integers(2**31))))
    report.timings["crop_encode"] += crop_seconds
    report.timings["filter"] += time.perf_counter() - start - crop_seconds
    return crops


def _caption_and_write(
    crops: list[Crop],
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
        meta = sample_json(crop, result.captions, stages.params)
        tar.add(f"{crop.key}.jpg", crop.jpeg)
        tar.add(f"{crop.key}.json", json_bytes(meta))
        manifest.append(manifest_row(crop, result.captions))
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
