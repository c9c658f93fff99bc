"""The gate as it was before batching, kept as the reference the batched gate must equal.

The whole corpus becomes one caption table and one crop table (a reader batch
larger than the corpus is exactly what the old ``read_gate_tables`` built),
each is validated by one Great Expectations run of the full suite, the
uniqueness expectation included, and the per-check results and the duplicate
examples are derived as the old ``run_suites`` did (pandas ``groupby`` over the
whole table). The reports are then written as the old ``run_quality_gate``
wrote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier

from gadms.config import ValidationConfig
from gadms.reproducible_writes import json_bytes, write_bytes_atomic
from gadms.validation import suite
from gadms.validation.combine import describe_caption, describe_crop, quote
from gadms.validation.corpus import CorpusReader
from gadms.validation.gate import DOCS_DIR, GATE_FILE, SUMMARY_FILE, format_summary
from gadms.validation.report import HISTORY_DIR, gate_thresholds, history_name, write_report
from gadms.validation.results import CheckResult, GateResult

EXAMPLES = 3


def _validate(context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], run_id: Any) -> Any:
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    gx_suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        gx_suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=gx_suite))
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": ["row"]}
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id)


def most_duplicated(captions: pd.DataFrame, limit: int = EXAMPLES) -> list[str]:
    """The old pandas version: group the whole table by text, most copies first, ties by first row."""
    texts = captions.dropna(subset=["text"])
    counts = texts.groupby("text", sort=False).agg(copies=("row", "size"), first=("row", "min"))
    repeated = counts[counts["copies"] > 1].sort_values(["copies", "first"], ascending=[False, True]).head(limit)
    return [
        f"{int(r.copies)} copies, first at {captions.iloc[int(r.first)]['where']}: {quote(str(text))}"
        for text, r in repeated.iterrows()
    ]


def _check_result(name: str, result: Any, tables: Any, cfg: ValidationConfig) -> CheckResult:
    share = round((result.result.get("unexpected_percent") or 0.0) / 100.0, 6)
    if name == "duplicates":
        return CheckResult(
            name, bool(result.success), share, 1.0 - cfg.max_duplicate_rate, most_duplicated(tables.captions)
        )
    rows = [entry["row"] for entry in result.result.get("partial_unexpected_index_list") or []]
    if name in suite.CROP_CHECKS:
        examples = [describe_crop(tables.crops.iloc[int(row)]) for row in rows[:EXAMPLES]]
    else:
        examples = [describe_caption(tables.captions.iloc[int(row)], name) for row in rows[:EXAMPLES]]
    return CheckResult(name, bool(result.success), share, getattr(cfg.mostly, name), examples)


def one_shot_gate(data_dir: Path, cfg: ValidationConfig, report_dir: Path) -> GateResult:
    """Run the single-table gate and write its ``summary.txt``, ``gate.json`` and ``report.html``.

    Args:
        data_dir: the corpus.
        cfg: the thresholds.
        report_dir: where the reports go.

    Returns:
        The verdict.
    """
    report_dir = Path(report_dir).resolve()
    reader = CorpusReader(data_dir, batch_captions=10**12)
    (tables,) = list(reader.batches())
    context = suite.ephemeral_context(report_dir / DOCS_DIR)
    run_id = RunIdentifier(run_name="quality-gate")
    captions = _validate(context, "captions", tables.captions, suite.caption_expectations(cfg), run_id)
    crops = _validate(context, "crops", tables.crops, suite.crop_expectations(cfg), run_id)
    context.build_data_docs()
    by_check = {r.expectation_config.meta["check"]: r for r in captions.results + crops.results}
    checks = [_check_result(name, by_check[name], tables, cfg) for name in suite.CHECKS]
    passed = all(c.passed for c in checks)
    counts = {"samples": len(tables.crops), "captions": len(tables.captions), "shards": len(reader.shards)}
    docs = report_dir / DOCS_DIR / "index.html"
    kept = Path(HISTORY_DIR) / history_name(reader.fingerprint, cfg)
    summary = format_summary(data_dir, checks, passed, counts, reader.fingerprint, docs.relative_to(report_dir), kept)
    result = GateResult(passed, checks, counts["captions"], counts["samples"], summary, docs, reader.fingerprint)
    write_report(result, cfg, data_dir, counts["shards"], report_dir)
    payload = result.to_dict(report_dir) | {"config": gate_thresholds(cfg), "shards": reader.shard_names}
    write_bytes_atomic(report_dir / SUMMARY_FILE, summary.encode("utf-8"))
    write_bytes_atomic(report_dir / GATE_FILE, json_bytes(payload))
    return result
