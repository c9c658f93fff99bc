"""The gate's Great Expectations suites, run batch by batch into per-check results and Data Docs.

Two suites: ``captions`` (one row per caption) and ``crops`` (one row per
sample). Each expectation carries ``meta["check"]``, the name of the check it
implements, which is how results are mapped back to checks. Every batch is
validated against the row-wise expectations and the results are summed per
check (:mod:`gadms.validation.combine` lists how each expectation combines);
the uniqueness expectation is counted over the whole corpus instead
(:mod:`gadms.validation.duplicates`). Data Docs show one validation per suite
with the combined counts. The GX context is ephemeral (nothing but the Data
Docs site is written, under the report folder) and built per run, so a gate
run leaves no state behind.

Importing this module imports Great Expectations (several seconds); the gate
imports it only when it runs.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from gadms.config import ValidationConfig
from gadms.validation import vocabulary
from gadms.validation.combine import CheckTally, describe_caption, describe_crop
from gadms.validation.corpus import GateBatch
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
AGGREGATE_CHECKS = ("duplicates",)  # need the whole corpus: not run per batch
_SITE = "gate_site"
_RUN_NAME = "quality-gate"
_RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["row"]}


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


class BatchSuites:
    """Validates batches against the row-wise expectations, keeps per-check totals, builds Data Docs at the end."""

    def __init__(self, cfg: ValidationConfig, docs_dir: Path):
        """Set up the totals; the GX context is made on the first batch (an empty corpus needs none).

        Args:
            cfg: the gate's thresholds.
            docs_dir: where the Data Docs site will be built.
        """
        self.cfg = cfg
        self.docs_dir = docs_dir
        self.tallies = {name: CheckTally(name, getattr(cfg.mostly, name)) for name in CHECKS if name != "duplicates"}
        self._context: Any = None
        self._definitions: dict[str, Any] = {}
        self._last: dict[str, Any] = {}
        self._run_id = RunIdentifier(run_name=_RUN_NAME)

    def add(self, batch: GateBatch) -> None:
        """Validate one batch's captions and crops and add their results to the totals.

        Args:
            batch: the batch (rows numbered in corpus order).
        """
        for name, frame in (("captions", batch.captions), ("crops", batch.crops)):
            suite_result = self._definition(name).run(
                batch_parameters={"dataframe": frame}, result_format=_RESULT_FORMAT, run_id=self._run_id
            )
            for result in suite_result.results:
                check = _check_of(result)
                self.tallies[check].add(result.result, _describer(frame, check))
            self._last[name] = suite_result

    def _definition(self, name: str) -> Any:
        """The validation definition of one suite (made, with the context, on first use)."""
        if self._context is None:
            self._context = ephemeral_context(self.docs_dir)
        if name not in self._definitions:
            expectations = caption_expectations(self.cfg) if name == "captions" else crop_expectations(self.cfg)
            rowwise = [e for e in expectations if e.meta["check"] not in AGGREGATE_CHECKS]
            self._definitions[name] = _add_definition(self._context, name, rowwise)
        return self._definitions[name]

    def finish(self, duplicates: CheckTally) -> tuple[list[CheckResult], Path]:
        """Combine the totals into per-check results and build Data Docs from them.

        Args:
            duplicates: the duplicate check's totals over the whole corpus.

        Returns:
            ``(checks in CHECKS order, path of the Data Docs index.html)``.
        """
        tallies = self.tallies | {"duplicates": duplicates}
        if self._context is not None:
            self._store_combined(tallies)
            self._context.build_data_docs(site_names=[_SITE])
        return [tallies[name].check_result() for name in CHECKS], self.docs_dir / "index.html"

    def _store_combined(self, tallies: dict[str, CheckTally]) -> None:
        """Replace each suite's stored (last batch) validation by one holding the combined counts."""
        store = self._context.validation_results_store
        duplicates = next(e for e in caption_expectations(self.cfg) if e.meta["check"] == "duplicates")
        self._definitions["captions"].suite.add_expectation(duplicates)
        for name, checks in (("captions", CAPTION_CHECKS), ("crops", CROP_CHECKS)):
            last = self._last[name]
            configs = {_check_of(r): r.expectation_config for r in last.results}
            configs.setdefault("duplicates", duplicates.configuration)
            last.results = [_combined(tallies[c], configs[c]) for c in checks]
            successes = sum(r.success for r in last.results)
            last.success = successes == len(last.results)
            last.statistics = {
                "evaluated_expectations": len(last.results),
                "successful_expectations": successes,
                "unsuccessful_expectations": len(last.results) - successes,
                "success_percent": successes / len(last.results) * 100,
            }
            keys = [k for k in store.list_keys() if k.expectation_suite_identifier.name == name]
            for key in keys[1:]:
                store.remove_key(key)
            store.set(keys[0], last)


def _add_definition(context: Any, name: str, expectations: list[Any]) -> Any:
    """A pandas dataframe asset, a suite and a validation definition named ``name``."""
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))


def _check_of(result: Any) -> str:
    """The check an expectation result belongs to; ``RuntimeError`` when GX could not evaluate it."""
    check = str(result.expectation_config.meta["check"])
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = " ".join(str(info.get("exception_message", "")).split())
        raise RuntimeError(f"quality gate: check {check} could not be evaluated by Great Expectations: {message}")
    return check


def _describer(frame: pd.DataFrame, check: str) -> Callable[[int], str]:
    """Row number -> example line, for the rows of one batch."""
    first = int(frame["row"].iat[0])
    if check in CROP_CHECKS:
        return lambda row: describe_crop(frame.iloc[row - first])
    return lambda row: describe_caption(frame.iloc[row - first], check)


def _combined(tally: CheckTally, config: Any) -> ExpectationValidationResult:
    """One expectation's result over the whole corpus, for Data Docs."""
    result = _escaped_values(tally.gx_result())
    return ExpectationValidationResult(success=tally.passed, expectation_config=config, result=result)


def _escaped_values(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with its failing text values HTML-escaped: Data Docs put them into the page as markup."""
    values = [html.escape(v) if isinstance(v, str) else v for v in result["partial_unexpected_list"]]
    counts = [
        c | {"value": html.escape(c["value"])} if isinstance(c.get("value"), str) else c
        for c in result["partial_unexpected_counts"]
    ]
    return result | {"partial_unexpected_list": values, "partial_unexpected_counts": counts}
