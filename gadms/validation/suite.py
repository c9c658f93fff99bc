"""The gate's Great Expectations suites, and running them into per-check results and Data Docs.

Two suites: ``captions`` (one row per caption) and ``crops`` (one row per
sample). Each expectation carries ``meta["check"]``, the name of the check it
implements, which is how results are mapped back to checks. The GX context is
ephemeral (nothing but the Data Docs site is written, under the report folder)
and built per run, so a gate run leaves no state behind.

Importing this module imports Great Expectations (several seconds); the gate
imports it only when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from gadms.config import ValidationConfig
from gadms.validation import vocabulary
from gadms.validation.corpus import GateTables
from gadms.validation.results import CheckResult

CAPTION_CHECKS = (
    "non_empty",
    "valid_text",
    "word_count",
    "no_speculation",
    "no_background",
    "mentions_person",
    "mentions_attribute",
    "no_placeholder",
    "duplicates",
)
CROP_CHECKS = ("crop_size", "crop_aspect")
CHECKS = CAPTION_CHECKS + CROP_CHECKS
EXAMPLES = 3
_SITE = "gate_site"
_RUN_NAME = "quality-gate"
_EXCERPT = 160


def _expectation(cls: type, check: str, notes: str, **kwargs: Any) -> Any:
    """An expectation tagged with the check it implements."""
    return cls(meta={"check": check}, notes=notes, **kwargs)


def caption_expectations(cfg: ValidationConfig) -> list[Any]:
    """The expectations over the caption table, one per caption check.

    Args:
        cfg: thresholds and per-check ``mostly`` shares.

    Returns:
        GX expectation objects, in ``CAPTION_CHECKS`` order.
    """
    m, words = cfg.mostly, vocabulary
    return [
        _expectation(
            gxe.ExpectColumnValuesToNotBeNull,
            "non_empty",
            "Every caption has text (text is null when the caption is empty or blank).",
            column="text",
            mostly=m.non_empty,
        ),
        _expectation(
            gxe.ExpectColumnValuesToNotMatchRegex,
            "valid_text",
            "Printable valid UTF-8: no control characters, no U+FFFD from undecodable bytes.",
            column="text",
            regex=words.INVALID_CHARACTER.pattern,
            mostly=m.valid_text,
        ),
        _expectation(
            gxe.ExpectColumnValuesToBeBetween,
            "word_count",
            "Caption length in words.",
            column="word_count",
            min_value=cfg.min_words,
            max_value=cfg.max_words,
            mostly=m.word_count,
        ),
        _expectation(
            gxe.ExpectColumnValuesToNotMatchRegex,
            "no_speculation",
            "Only visually certain details: no hedging words.",
            column="text",
            regex=words.SPECULATION.pattern,
            mostly=m.no_speculation,
        ),
        _expectation(
            gxe.ExpectColumnValuesToNotMatchRegex,
            "no_background",
            "Only the person: no scenery, weather, atmosphere or photo-style talk.",
            column="text",
            regex=words.BACKGROUND.pattern,
            mostly=m.no_background,
        ),
        _expectation(
            gxe.ExpectColumnValuesToMatchRegex,
            "mentions_person",
            "Names or refers to a person.",
            column="text",
            regex=words.PERSON.pattern,
            mostly=m.mentions_person,
        ),
        _expectation(
            gxe.ExpectColumnValuesToMatchRegex,
            "mentions_attribute",
            "Names at least one garment, accessory or colour.",
            column="text",
            regex=words.ATTRIBUTE.pattern,
            mostly=m.mentions_attribute,
        ),
        _expectation(
            gxe.ExpectColumnValuesToNotMatchRegex,
            "no_placeholder",
            "No template placeholder left unfilled, e.g. [colored top].",
            column="text",
            regex=words.PLACEHOLDER.pattern,
            mostly=m.no_placeholder,
        ),
        _expectation(
            gxe.ExpectColumnValuesToBeUnique,
            "duplicates",
            f"At most {cfg.max_duplicate_rate:g} of the captions have an exact twin.",
            column="text",
            mostly=1.0 - cfg.max_duplicate_rate,
        ),
    ]


def crop_expectations(cfg: ValidationConfig) -> list[Any]:
    """The expectations over the crop table, one per crop check.

    Args:
        cfg: crop bounds and per-check ``mostly`` shares.

    Returns:
        GX expectation objects, in ``CROP_CHECKS`` order.
    """
    m = cfg.mostly
    return [
        _expectation(
            gxe.ExpectColumnValuesToBeBetween,
            "crop_size",
            "Crop short side in pixels.",
            column="short_side",
            min_value=cfg.min_crop_short_side,
            mostly=m.crop_size,
        ),
        _expectation(
            gxe.ExpectColumnValuesToBeBetween,
            "crop_aspect",
            "Crop width / height.",
            column="aspect",
            min_value=cfg.min_crop_aspect,
            max_value=cfg.max_crop_aspect,
            mostly=m.crop_aspect,
        ),
    ]


def ephemeral_context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only file output is a Data Docs site in ``docs_dir``.

    Args:
        docs_dir: where the Data Docs site is built.

    Returns:
        The context (analytics and progress bars off).
    """
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    context.add_data_docs_site(site_name=_SITE, site_config=site)  # type: ignore[arg-type]
    return context


def _validate(context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], run_id: Any) -> Any:
    """Validate one table against one suite; the result is stored for Data Docs."""
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": ["row"]}
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id)


def run_suites(tables: GateTables, cfg: ValidationConfig, docs_dir: Path) -> tuple[list[CheckResult], Path]:
    """Run both suites, build Data Docs, and turn the GX results into per-check results.

    Args:
        tables: the caption and crop tables.
        cfg: the gate's thresholds.
        docs_dir: the Data Docs site folder (created).

    Returns:
        ``(checks in CHECKS order, path of the Data Docs index.html)``.
    """
    context = ephemeral_context(docs_dir)
    run_id = RunIdentifier(run_name=_RUN_NAME)
    captions = _validate(context, "captions", tables.captions, caption_expectations(cfg), run_id)
    crops = _validate(context, "crops", tables.crops, crop_expectations(cfg), run_id)
    context.build_data_docs(site_names=[_SITE])
    by_check = {**_results_by_check(captions), **_results_by_check(crops)}
    checks = [_check_result(name, by_check[name], tables, cfg) for name in CHECKS]
    return checks, docs_dir / "index.html"


def _results_by_check(suite_result: Any) -> dict[str, Any]:
    """Each expectation result of a suite run, keyed by its ``meta["check"]``."""
    return {r.expectation_config.meta["check"]: r for r in suite_result.results}


def _check_result(name: str, result: Any, tables: GateTables, cfg: ValidationConfig) -> CheckResult:
    """One check's result from its GX expectation result."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = " ".join(str(info.get("exception_message", "")).split())
        raise RuntimeError(f"quality gate: check {name} could not be evaluated by Great Expectations: {message}")
    share = (result.result.get("unexpected_percent") or 0.0) / 100.0
    if name == "duplicates":
        return CheckResult(
            name, bool(result.success), _round(share), 1.0 - cfg.max_duplicate_rate, most_duplicated(tables.captions)
        )
    rows = [entry["row"] for entry in result.result.get("partial_unexpected_index_list") or []]
    if name in CROP_CHECKS:
        examples = [describe_crop(tables.crops.iloc[int(row)]) for row in rows[:EXAMPLES]]
    else:
        examples = [describe_caption(tables.captions.iloc[int(row)], name) for row in rows[:EXAMPLES]]
    return CheckResult(name, bool(result.success), _round(share), getattr(cfg.mostly, name), examples)


def most_duplicated(captions: pd.DataFrame, limit: int = EXAMPLES) -> list[str]:
    """The captions with the most exact copies, most copied first (ties by first appearance).

    Args:
        captions: the caption table.
        limit: how many to return.

    Returns:
        ``'N copies, first at WHERE: "caption"'`` strings; empty when nothing repeats.
    """
    texts = captions.dropna(subset=["text"])
    counts = texts.groupby("text", sort=False).agg(copies=("row", "size"), first=("row", "min"))
    repeated = counts[counts["copies"] > 1].sort_values(["copies", "first"], ascending=[False, True]).head(limit)
    return [
        f"{int(r.copies)} copies, first at {captions.iloc[int(r.first)]['where']}: {_quote(str(text))}"
        for text, r in repeated.iterrows()
    ]


def describe_caption(row: pd.Series, check: str = "") -> str:
    """``'WHERE: "caption"'`` for one caption row (JSON-quoted so control characters show).

    Args:
        row: a row of the caption table.
        check: the check it failed; ``word_count`` adds the count, since long captions are cut.

    Returns:
        One line for a person to find and read the caption.
    """
    count = f" ({int(row['word_count'])} words)" if check == "word_count" else ""
    return f"{row['where']}{count}: {_quote(row['caption'])}"


def describe_crop(row: pd.Series) -> str:
    """``'WHERE: crop WxH (w/h A)'`` for one crop row."""
    aspect = "unknown" if pd.isna(row["aspect"]) else f"{row['aspect']:.2f}"
    return f"{row['where']}: crop {row['width']:g}x{row['height']:g} (w/h {aspect})"


def _quote(text: str) -> str:
    """A caption as a JSON string literal, cut to a readable length."""
    short = text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."
    return json.dumps(short, ensure_ascii=False)


def _round(share: float) -> float:
    """Shares are stored to 6 decimals, so reports do not print float noise."""
    return round(share, 6)
