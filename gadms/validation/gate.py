"""The caption quality gate (SPEC 4): run it on a curated corpus, or require that it passed.

``run_quality_gate`` streams the shards in batches of whole samples
(``validation.batch_captions`` captions each), runs the Great Expectations
suites on each batch, counts duplicate captions over the whole corpus with a
disk spill, combines the results exactly (:mod:`gadms.validation.combine`) and
writes into the report folder:

- ``data_docs/index.html``: the GX Data Docs site (rebuilt on every run);
- ``summary.txt``: pass/fail per check, failing share vs allowed share, and up
  to three offending captions (or crops) per failing check;
- ``gate.json``: the same, machine-readable, with the corpus fingerprint, so a
  later stage can check that the gate passed on exactly the data it reads;
- ``report.html`` and ``history/<fingerprint>-<thresholds>.html``: the gate's
  own self-contained report (works offline, checks by name; see
  :mod:`gadms.validation.report`), one kept per corpus version and thresholds.

None of these files holds a timestamp: the same data and thresholds give the same bytes,
whatever the batch size (it is not a threshold, so neither ``gate.json`` nor the kept
report's name records it). Memory follows the batch size, not the corpus.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from gadms.config import ValidationConfig
from gadms.reproducible_writes import json_bytes, write_bytes_atomic
from gadms.validation.combine import CheckTally, quote
from gadms.validation.corpus import CorpusReader, corpus_fingerprint
from gadms.validation.duplicates import DuplicateCount, DuplicateCounter, first_copies
from gadms.validation.report import HISTORY_DIR, REPORT_FILE, gate_thresholds, history_name, write_report
from gadms.validation.results import CheckResult, GateFailed, GateResult

logger = logging.getLogger(__name__)

GATE_FILE = "gate.json"
SUMMARY_FILE = "summary.txt"
DOCS_DIR = "data_docs"
_CROP_CHECKS = ("crop_size", "crop_aspect")


def run_quality_gate(data_dir: Path, cfg: ValidationConfig, report_dir: Path) -> GateResult:
    """Check every caption and crop of a curated corpus and write the gate's reports.

    Args:
        data_dir: the curated corpus (``00000.tar``, ``00001.tar``, ...).
        cfg: thresholds, per-check ``mostly`` shares and the batch size.
        report_dir: where ``data_docs/``, ``summary.txt`` and ``gate.json`` are written.

    Returns:
        The verdict. A failed gate is a result (``passed=False``), not an
        exception; ``GateError`` only when the corpus is missing, empty or unreadable.
    """
    from gadms.validation.suite import BatchSuites  # imports Great Expectations, which is slow

    data_dir, report_dir = Path(data_dir), Path(report_dir).resolve()
    reader = CorpusReader(data_dir, cfg.batch_captions)
    suites = BatchSuites(cfg, report_dir / DOCS_DIR)
    with DuplicateCounter() as duplicates:
        for batch in reader.batches():
            suites.add(batch)
            duplicates.add(batch.captions)
        counted = duplicates.count()
    duplicate_tally = _duplicate_tally(counted, reader, cfg)
    _fresh_dir(report_dir / DOCS_DIR)
    checks, docs_index = suites.finish(duplicate_tally)
    passed = all(c.passed for c in checks)
    counts = {"samples": reader.samples, "captions": reader.captions, "shards": len(reader.shards)}
    kept = Path(HISTORY_DIR) / history_name(reader.fingerprint, cfg)
    summary = format_summary(
        data_dir, checks, passed, counts, reader.fingerprint, docs_index.relative_to(report_dir), kept
    )
    result = GateResult(
        passed,
        checks,
        counts["captions"],
        counts["samples"],
        summary,
        docs_index if docs_index.is_file() else None,
        reader.fingerprint,
    )
    write_report(result, cfg, data_dir, counts["shards"], report_dir)
    _write_reports(result, cfg, reader.shard_names, report_dir)
    logger.info(summary.splitlines()[0])
    return result


def _duplicate_tally(counted: DuplicateCount, reader: CorpusReader, cfg: ValidationConfig) -> CheckTally:
    """The duplicate check's totals, shaped like a row-wise check's; its examples are read back from the shards."""
    tally = CheckTally("duplicates", 1.0 - cfg.max_duplicate_rate, reader.captions, counted.texts, counted.duplicated)
    for group, (where, text) in zip(counted.top, first_copies(counted, reader)):
        tally.examples.append(f"{group.copies} copies, first at {where}: {quote(text)}")
        tally.values.append(text)
        tally.value_rows.append({"row": group.first})
    return tally


def _fresh_dir(path: Path) -> Path:
    """Empty (or create) a folder the gate owns, so Data Docs show this run only."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _write_reports(result: GateResult, cfg: ValidationConfig, shards: list[str], report_dir: Path) -> None:
    """Write ``summary.txt`` then ``gate.json`` (the verdict last), each atomically."""
    payload = result.to_dict(report_dir) | {"config": gate_thresholds(cfg), "shards": shards}
    write_bytes_atomic(report_dir / SUMMARY_FILE, result.summary.encode("utf-8"))
    write_bytes_atomic(report_dir / GATE_FILE, json_bytes(payload))


def format_summary(
    data_dir: Path,
    checks: list[CheckResult],
    passed: bool,
    counts: dict[str, int],
    fingerprint: str,
    docs: Path,
    kept: Path | None = None,
) -> str:
    """The human-readable report: verdict, a table of checks, then examples for each failing check.

    Args:
        data_dir: the corpus checked.
        checks: the per-check results.
        passed: the verdict.
        counts: ``samples``, ``captions`` and ``shards`` checked.
        fingerprint: the corpus fingerprint.
        docs: the Data Docs index, relative to the report folder.
        kept: the kept HTML report, relative to the report folder (None: not named).

    Returns:
        The text of ``summary.txt`` (ends with a newline).
    """
    failed = [c for c in checks if not c.passed]
    verdict = "PASSED" if passed else f"FAILED ({', '.join(c.name for c in failed)})"
    lines = [
        f"Caption quality gate: {verdict}",
        f"corpus: {data_dir} ({counts['shards']} shards, {counts['samples']} samples, {counts['captions']} captions)",
        f"fingerprint: sha256 {fingerprint}",
        "",
        f"{'check':<20} {'result':<7} {'failing':>10} {'allowed':>10}",
    ]
    lines += [_check_line(c) for c in checks]
    for check in failed:
        lines += ["", *_failure_lines(check)]
    lines.append("")
    if kept is not None:
        lines.append(f"Report: {REPORT_FILE} (works offline; kept as {kept.as_posix()})")
    lines.append(f"Data Docs: {docs.as_posix()}")
    return "\n".join(lines) + "\n"


def _check_line(check: CheckResult) -> str:
    """One row of the check table."""
    result = "pass" if check.passed else "FAIL"
    return f"{check.name:<20} {result:<7} {_percent(check.unexpected_share):>10} {_percent(check.allowed_share):>10}"


def _failure_lines(check: CheckResult) -> list[str]:
    """What failed in one check and its example rows."""
    rows = "crops" if check.name in _CROP_CHECKS else "captions"
    head = (
        f"{check.name}: {_percent(check.unexpected_share)} of {rows} fail, "
        f"{_percent(check.allowed_share)} allowed. Examples:"
    )
    return [head, *(f"  {example}" for example in check.examples or ["(none recorded)"])]


def _percent(share: float) -> str:
    """A share as a percentage with up to four significant digits (never rounds a failure to 0)."""
    return f"{100.0 * share:.4g}%"


def read_gate(report_dir: Path) -> GateResult:
    """Load the verdict a previous gate run wrote.

    Args:
        report_dir: the gate's report folder.

    Returns:
        The recorded result; ``GateFailed`` when ``gate.json`` is missing or unreadable.
    """
    report_dir = Path(report_dir)
    path = report_dir / GATE_FILE
    if not path.is_file():
        raise GateFailed(f"quality gate: no verdict at {path}; run the gate on this corpus first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        summary_path = report_dir / SUMMARY_FILE
        summary = summary_path.read_text(encoding="utf-8") if summary_path.is_file() else ""
        return GateResult.from_dict(raw, report_dir, summary)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise GateFailed(f"quality gate: {path} is not a valid gate report ({type(err).__name__}: {err})") from None


def require_passed_gate(data_dir: Path, report_dir: Path) -> GateResult:
    """Insist that the gate passed on exactly the corpus now in ``data_dir``.

    Args:
        data_dir: the curated corpus about to be versioned or trained on.
        report_dir: the report folder of the gate run.

    Returns:
        The recorded, passing result. ``GateFailed`` (one line) when there is no
        verdict, the verdict is a failure, or the shards changed since
        (fingerprint mismatch); ``GateError`` when the corpus is missing or empty.
    """
    result = read_gate(report_dir)
    if not result.passed:
        failed = ", ".join(result.failed_checks) or "unknown checks"
        raise GateFailed(f"quality gate failed on {data_dir}: {failed} (see {Path(report_dir) / SUMMARY_FILE})")
    current = corpus_fingerprint(Path(data_dir))
    if current != result.fingerprint:
        raise GateFailed(
            f"quality gate: {data_dir} changed since the gate passed "
            f"(fingerprint {current[:12]} != {result.fingerprint[:12]}); re-run the gate"
        )
    return result
