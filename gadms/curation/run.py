"""The curation run: source shards -> detection -> filter -> crops -> captions -> curated shards.

Each source shard becomes one curated shard of the same name, processed on its
own (so shards can fan out over threads or a Dask cluster) and written
atomically: ``OUT/NAME.tar`` (per person ``KEY.jpg`` crop + ``KEY.json``),
``OUT/meta/NAME.parquet`` (manifest rows), ``OUT/meta/NAME.decisions.parquet``
(every box with its decision) and, last, ``OUT/meta/NAME.report.json``, the
shard's done marker. A rerun skips shards whose marker matches the input and
parameters; a killed run leaves at most temporary files, so the restart writes
the same bytes as an uninterrupted run. :func:`finalize_curation` joins the
per-shard files into ``OUT/manifest.parquet`` and ``OUT/report.json``.

Everything written is a function of the input bytes, the parameters and the
seed (timings are returned, never written), so the DVC hash of ``OUT`` is
reproducible.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from gadms.config import Params
from gadms.curation.detect import Detector, build_detector
from gadms.curation.filter import KEEP, crop_box, crop_image, filter_decision, visible_keypoints
from gadms.curation.records import CaptionRequest, CaptionResult, PersonDetection, SourceRecord, Template
from gadms.curation.sources import ImageDecodeError, SourceShard, decode_image, iter_source, list_source_shards
from gadms.shards import ShardWriter, jpeg_bytes, json_bytes, write_bytes_atomic

META_DIR = "meta"
MANIFEST = "manifest.parquet"
REPORT = "report.json"
CAPTION_FAILED = "caption_failed"
CAPTION_BATCH = 64
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class CurationError(ValueError):
    """The curation run cannot go on; the message is one line."""


@dataclass
class ShardReport:
    """What happened to one source shard; ``seen == kept + rejected + failed`` always holds.

    Attributes:
        shard: the shard name.
        seen: source samples read.
        kept: samples with at least one curated person crop.
        rejected: samples in which no person passed the filter.
        failed: samples that could not be used (unreadable, or captioning failed), by reason in ``failures``.
        crops: curated person crops written.
        captions: captions written.
        boxes: every detected person by decision (``keep``, ``too_small``, ..., ``caption_failed``).
        failures: failed samples by reason.
        problems: shard-level trouble (e.g. a truncated tar).
        timings: seconds per stage (not written to disk: it is not reproducible).
        skipped: True when the shard was already done and was not processed again.
    """

    shard: str
    seen: int = 0
    kept: int = 0
    rejected: int = 0
    failed: int = 0
    crops: int = 0
    captions: int = 0
    boxes: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    timings: Counter = field(default_factory=Counter)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The reproducible part of the report, for JSON."""
        return {
            "shard": self.shard,
            "seen": self.seen,
            "kept": self.kept,
            "rejected": self.rejected,
            "failed": self.failed,
            "crops": self.crops,
            "captions": self.captions,
            "boxes": dict(sorted(self.boxes.items())),
            "failures": dict(sorted(self.failures.items())),
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ShardReport":
        """Rebuild a report read back from a done marker."""
        return cls(
            shard=raw["shard"], seen=raw["seen"], kept=raw["kept"], rejected=raw["rejected"], failed=raw["failed"],
            crops=raw["crops"], captions=raw["captions"], boxes=Counter(raw["boxes"]), failures=Counter(raw["failures"]),
            problems=list(raw["problems"]), skipped=True,
        )


@dataclass
class CurationReport:
    """The whole run: per-shard reports and their totals."""

    out: Path
    shards: list[ShardReport]

    def totals(self) -> dict[str, Any]:
        """Sums over shards of every count."""
        total: dict[str, Any] = {k: sum(getattr(s, k) for s in self.shards) for k in ("seen", "kept", "rejected", "failed", "crops", "captions")}
        total["boxes"] = dict(sorted(sum((s.boxes for s in self.shards), Counter()).items()))
        total["failures"] = dict(sorted(sum((s.failures for s in self.shards), Counter()).items()))
        return total

    def to_dict(self) -> dict[str, Any]:
        """Totals plus every shard's report, for ``report.json``."""
        return {"totals": self.totals(), "shards": [s.to_dict() for s in self.shards]}

    def summary(self) -> str:
        """A few lines for a person: images seen/kept/rejected/failed, crops, reasons."""
        t = self.totals()
        lines = [
            f"curated {self.out}: {t['seen']} images seen in {len(self.shards)} shards -> {t['kept']} kept, "
            f"{t['rejected']} rejected, {t['failed']} failed; {t['crops']} person crops, {t['captions']} captions",
            "  boxes: " + ", ".join(f"{k} {v}" for k, v in t["boxes"].items()),
        ]
        if t["failures"]:
            lines.append("  failed images: " + ", ".join(f"{k} {v}" for k, v in t["failures"].items()))
        problems = [p for s in self.shards for p in s.problems]
        if problems:
            lines.append(f"  {len(problems)} shard problems, first: {problems[0]}")
        return "\n".join(lines)


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
        return hashlib.sha256(json_bytes({"seed": self.params.seed, "curation": curation, "templates": templates})).hexdigest()


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


def curated_key(source_key: str, person_index: int, used: set[str]) -> str:
    """A WebDataset-safe, shard-unique key for one person crop (no dots or slashes)."""
    base = _KEY_UNSAFE.sub("_", source_key).strip("_") or "sample"
    key, n = f"{base}_{person_index}", 1
    while key in used:
        key, n = f"{base}_{person_index}_{n}", n + 1
    used.add(key)
    return key


def marker_path(out: Path, name: str) -> Path:
    """The done marker of shard ``name``."""
    return out / META_DIR / f"{name}.report.json"


def shard_fingerprint(shard: SourceShard, stages_fingerprint: str) -> str:
    """Identity of the work on one shard: its input (name, kind, size, members) and the parameters."""
    paths = [shard.path / m for m in shard.members] if shard.kind == "folder" else [shard.path]
    sizes = [p.stat().st_size for p in paths]
    identity = {"name": shard.name, "kind": shard.kind, "members": list(shard.members), "sizes": sizes, "params": stages_fingerprint}
    return hashlib.sha256(json_bytes(identity)).hexdigest()


def finished_report(out: Path, shard: SourceShard, fingerprint: str) -> ShardReport | None:
    """The report of a shard already done with the same input and parameters, else ``None``."""
    path = marker_path(out, shard.name)
    if not path.is_file() or not (out / f"{shard.name}.tar").is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if raw.get("fingerprint") != fingerprint:
        return None
    return ShardReport.from_dict(raw["report"])


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
    done = finished_report(out, shard, fingerprint)
    if done is not None:
        return done
    report = ShardReport(shard.name)
    manifest: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    bar = tqdm(desc=f"curate {shard.name}", unit="img", disable=not progress, leave=False)
    with ShardWriter(out / f"{shard.name}.tar") as tar:
        for batch in _batches(iter_source(shard, report.problems), params.curation.detector.batch_size, report):
            crops = _detect_and_crop(batch, shard, stages, report, decisions)
            _caption_and_write(crops, batch, stages, tar, report, manifest)
            bar.update(len(batch))
    bar.close()
    meta = out / META_DIR
    write_bytes_atomic(meta / f"{shard.name}.parquet", _parquet_bytes(manifest, MANIFEST_SCHEMA))
    write_bytes_atomic(meta / f"{shard.name}.decisions.parquet", _parquet_bytes(decisions, DECISIONS_SCHEMA))
    assert report.seen == report.kept + report.rejected + report.failed, report
    write_bytes_atomic(marker_path(out, shard.name), json_bytes({"fingerprint": fingerprint, "report": report.to_dict()}))
    return report


def _batches(records: Iterable[SourceRecord], size: int, report: ShardReport) -> Iterator[list[tuple[SourceRecord, np.ndarray | None]]]:
    """Decode records into batches of ``(record, image)``; unusable records come with ``None``."""
    batch: list[tuple[SourceRecord, np.ndarray | None]] = []
    it = iter(records)
    while True:
        start = time.perf_counter()
        record = next(it, None)
        if record is None:
            break
        report.seen += 1
        image = None
        if record.error is None and record.image is not None:
            try:
                image = decode_image(record.image)
            except ImageDecodeError as err:
                record = SourceRecord(record.key, None, record.text, record.meta, err.reason, err.detail)
        report.timings["read_decode"] += time.perf_counter() - start
        batch.append((record, image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _detect_and_crop(batch: list[tuple[SourceRecord, np.ndarray | None]], shard: SourceShard, stages: CurationStages,
                     report: ShardReport, decisions: list[dict[str, Any]]) -> list[_Crop]:
    """Detect, filter and crop the people of a batch; record every decision."""
    usable = [(r, im) for r, im in batch if im is not None]
    start = time.perf_counter()
    found = stages.detect([im for _, im in usable], [r for r, _ in usable])
    report.timings["detect"] += time.perf_counter() - start
    start = time.perf_counter()
    params = stages.params
    crops: list[_Crop] = []
    used: set[str] = set()
    crop_seconds = 0.0
    for (record, image), people in zip(usable, found):
        assert image is not None
        for index, person in enumerate(people):
            decision = filter_decision(person, params.curation.filter)
            decisions.append(_decision_row(record.key, index, person, decision, params))
            report.boxes[decision] += 1
            if decision != KEEP:
                continue
            rng = sample_seed(params.seed, shard.name, record.key, index)
            templates = choose_templates(stages.templates, params.curation.captioning.captions_per_image, rng)
            crop_start = time.perf_counter()
            box = crop_box(person.box, params.curation.crop.margin, image.shape[1], image.shape[0])
            jpeg = jpeg_bytes(np.ascontiguousarray(crop_image(image, box)), params.curation.crop.jpeg_quality)
            crop_seconds += time.perf_counter() - crop_start
            crops.append(_Crop(curated_key(record.key, index, used), shard.name, record, index, person, box, jpeg, templates, int(rng.integers(2**31))))
    report.timings["crop_encode"] += crop_seconds
    report.timings["filter"] += time.perf_counter() - start - crop_seconds
    return crops


def _caption_and_write(crops: list[_Crop], batch: list[tuple[SourceRecord, np.ndarray | None]], stages: CurationStages,
                       tar: ShardWriter, report: ShardReport, manifest: list[dict[str, Any]]) -> None:
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
            report.failed += 1
            report.failures[record.error or "unreadable"] += 1
        elif written[record.key]:
            report.kept += 1
        elif record.key in caption_failures:
            report.failed += 1
            report.failures[CAPTION_FAILED] += 1
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


MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("source_key", pa.string()), ("person_index", pa.int32()),
    ("crop_width", pa.int32()), ("crop_height", pa.int32()), ("box", pa.list_(pa.float64())),
    ("score", pa.float64()), ("captions", pa.list_(pa.string())), ("template_ids", pa.list_(pa.int32())),
])
DECISIONS_SCHEMA = pa.schema([
    ("source_key", pa.string()), ("person_index", pa.int32()), ("decision", pa.string()),
    ("box", pa.list_(pa.float64())), ("score", pa.float64()), ("visible_keypoints", pa.int32()),
])


def _manifest_row(crop: _Crop, captions: list[str]) -> dict[str, Any]:
    x0, y0, x1, y1 = crop.box
    return {
        "key": crop.key, "source_key": crop.record.key, "person_index": crop.person_index,
        "crop_width": x1 - x0, "crop_height": y1 - y0, "box": _rounded(crop.person.box),
        "score": round(crop.person.score, 4), "captions": captions, "template_ids": [t.id for t in crop.templates],
    }


def _decision_row(key: str, index: int, person: PersonDetection, decision: str, params: Params) -> dict[str, Any]:
    seen = visible_keypoints(person.keypoints, params.curation.filter.keypoint_confidence)
    return {"source_key": key, "person_index": index, "decision": decision, "box": _rounded(person.box),
            "score": round(person.score, 4), "visible_keypoints": int(seen.sum())}


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows as a Parquet file with a fixed schema (the same rows give the same bytes)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def finalize_curation(out: Path, reports: Sequence[ShardReport]) -> CurationReport:
    """Join per-shard manifests into ``manifest.parquet``, write ``report.json``, drop stale shards.

    Args:
        out: the curated output directory.
        reports: the reports of this run's shards (any order).

    Returns:
        The run's report, shards in name order.
    """
    out = Path(out)
    ordered = sorted(reports, key=lambda r: r.shard)
    names = {r.shard for r in ordered}
    for marker in sorted((out / META_DIR).glob("*.report.json")):
        name = marker.name[: -len(".report.json")]
        if name not in names:  # a shard of an earlier run whose input is gone
            for path in (out / f"{name}.tar", out / META_DIR / f"{name}.parquet", out / META_DIR / f"{name}.decisions.parquet", marker):
                path.unlink(missing_ok=True)
    tables = [pq.read_table(out / META_DIR / f"{r.shard}.parquet") for r in ordered]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(out / MANIFEST, sink.getvalue().to_pybytes())
    report = CurationReport(out, ordered)
    write_bytes_atomic(out / REPORT, json_bytes(report.to_dict()))
    return report


def prepare_output(out: Path) -> None:
    """Create ``out`` and delete temporary files an interrupted run left behind.

    Call once before shards are handed out (not while other processes write to ``out``).
    """
    out = Path(out)
    (out / META_DIR).mkdir(parents=True, exist_ok=True)
    for folder in (out, out / META_DIR):
        for leftover in folder.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)


def curate(input_dir: Path, out: Path, params: Params, progress: bool = True,
           on_shard: Callable[[ShardReport], None] | None = None) -> CurationReport:
    """Curate every source shard of ``input_dir`` into ``out``, one shard after another.

    Args:
        input_dir: web shards (WebDataset tars, Parquet files or a folder of images).
        out: the curated output directory (created).
        params: all parameters.
        progress: show progress bars.
        on_shard: called with each shard's report as it finishes.

    Returns:
        The run's report.
    """
    source = params.curation.source
    shards = list_source_shards(Path(input_dir), source.format, source.folder_shard_size)
    prepare_output(Path(out))
    reports = []
    for shard in tqdm(shards, desc="curate", unit="shard", disable=not progress):
        report = curate_shard(shard, Path(out), params, progress=progress)
        reports.append(report)
        if on_shard is not None:
            on_shard(report)
    return finalize_curation(Path(out), reports)
