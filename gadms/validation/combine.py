"""Per-batch Great Expectations results combined into the corpus's per-check results.

The gate validates the corpus batch by batch (see :mod:`gadms.validation.corpus`)
and must report what one GX run over the whole corpus would: the same failing
shares, verdicts and examples. Each expectation and how it combines:

- ``non_empty`` (``ExpectColumnValuesToNotBeNull`` on ``text``): row-wise; failing
  = sum of the batches' unexpected counts, rows = sum of their row counts (GX
  counts nulls against every row).
- ``valid_text``, ``no_speculation``, ``no_background``, ``no_placeholder``
  (``ExpectColumnValuesToNotMatchRegex`` on ``text``), ``mentions_person``,
  ``mentions_attribute`` (``ExpectColumnValuesToMatchRegex`` on ``text``) and
  ``word_count`` (``ExpectColumnValuesToBeBetween`` on ``word_count``): row-wise
  over non-null values; failing = sum of unexpected counts, rows = sum of
  ``element_count - missing_count`` (GX leaves nulls out of these).
- ``crop_size``, ``crop_aspect`` (``ExpectColumnValuesToBeBetween`` on
  ``short_side``, ``aspect``): row-wise like the above, over the crop rows.
- ``duplicates`` (``ExpectColumnValuesToBeUnique`` on ``text``): aggregate. A row
  fails when its text occurs anywhere else in the corpus, so per-batch results
  cannot be summed; it is run on no batch but counted once over the whole corpus
  by :class:`gadms.validation.duplicates.DuplicateCounter` (exact, bounded memory),
  then shown in Data Docs with those counts.

For every check the share is failing / rows and the verdict GX's ``mostly``
rule on the totals, ``(rows - failing) / rows >= mostly`` (a check with no rows
passes), computed with the same float operations as GX, so the shares and
verdicts are those of a single run. Examples are the first failing rows in
corpus order: batches arrive in corpus order and GX lists a batch's failing
rows in row order, so the first three of the concatenation are the corpus's.
There are no mean, quantile or coverage expectations; one would need an exact
streaming combination (sums and counts for a mean) before it could be added.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from gadms.validation.results import CheckResult

EXAMPLES = 3
PARTIAL = 20  # GX's partial_unexpected_count: failing values kept for Data Docs
_EXCERPT = 160


@dataclass
class CheckTally:
    """One check's running totals over the batches seen so far.

    Attributes:
        name: the check.
        mostly: share of rows that must pass it.
        elements: rows seen, nulls included.
        rows: rows the check applies to (non-null values; every row for ``non_empty``).
        failing: rows that fail it.
        examples: the first failing rows, described for a person (at most ``EXAMPLES``).
        values: the first failing values (at most ``PARTIAL``), for Data Docs.
        value_rows: their ``{"row": N}`` entries.
        counts_missing: whether GX reports nulls separately for this expectation.
    """

    name: str
    mostly: float
    elements: int = 0
    rows: int = 0
    failing: int = 0
    examples: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    value_rows: list[dict[str, Any]] = field(default_factory=list)
    counts_missing: bool = True

    def add(self, result: dict[str, Any], describe: Callable[[int], str]) -> None:
        """Add one batch's GX result (``SUMMARY`` format, indexed by the ``row`` column).

        Args:
            result: the expectation result's ``result`` mapping.
            describe: a failing row number of this batch -> its example line.
        """
        elements = int(result.get("element_count") or 0)
        self.counts_missing = "missing_count" in result
        self.elements += elements
        self.rows += elements - int(result.get("missing_count") or 0)
        self.failing += int(result.get("unexpected_count") or 0)
        index = result.get("partial_unexpected_index_list") or []
        for entry in index[: max(0, EXAMPLES - len(self.examples))]:
            self.examples.append(describe(int(entry["row"])))
        room = max(0, PARTIAL - len(self.values))
        self.values += list(result.get("partial_unexpected_list") or [])[:room]
        self.value_rows += list(index)[:room]

    @property
    def percent(self) -> float | None:
        """The failing percentage as GX computes it; None when no row applies."""
        return self.failing / self.rows * 100 if self.rows else None

    @property
    def passed(self) -> bool:
        """GX's ``mostly`` rule on the totals; vacuously true without rows."""
        return self.rows == 0 or (self.rows - self.failing) / self.rows >= self.mostly

    def check_result(self) -> CheckResult:
        """The check's result, as ``gate.json`` and the reports show it."""
        share = round((self.percent or 0.0) / 100.0, 6)  # stored to 6 decimals: no float noise in reports
        return CheckResult(self.name, self.passed, share, self.mostly, list(self.examples))

    def gx_result(self) -> dict[str, Any]:
        """The combined totals in the shape of a GX ``SUMMARY`` result, for Data Docs."""
        result: dict[str, Any] = {
            "element_count": self.elements,
            "unexpected_count": self.failing,
            "unexpected_percent": self.percent,
            "partial_unexpected_list": self.values,
            "unexpected_index_column_names": ["row"],
            "partial_unexpected_counts": _value_counts(self.values),
            "partial_unexpected_index_list": self.value_rows,
        }
        if self.counts_missing:
            missing = self.elements - self.rows
            result["missing_count"] = missing
            result["missing_percent"] = missing / self.elements * 100 if self.elements else None
            result["unexpected_percent_total"] = self.failing / self.elements * 100 if self.elements else None
            result["unexpected_percent_nonmissing"] = self.percent
        return result


def _value_counts(values: list[Any]) -> list[dict[str, Any]]:
    """GX's ``partial_unexpected_counts``: each failing value and how often, most frequent first."""
    try:
        return [{"value": v, "count": n} for v, n in sorted(Counter(values).most_common(), key=lambda x: (-x[1], x[0]))]
    except TypeError:  # unhashable or unorderable values, as GX reports them
        return [{"error": "partial_exception_counts requires a hashable type"}]


def describe_caption(row: pd.Series, check: str = "") -> str:
    """``'WHERE: "caption"'`` for one caption row (JSON-quoted so control characters show).

    Args:
        row: a row of a caption batch.
        check: the check it failed; ``word_count`` adds the count, since long captions are cut.

    Returns:
        One line for a person to find and read the caption.
    """
    count = f" ({int(row['word_count'])} words)" if check == "word_count" else ""
    return f"{row['where']}{count}: {quote(row['caption'])}"


def describe_crop(row: pd.Series) -> str:
    """``'WHERE: crop WxH (w/h A)'`` for one crop row.

    Args:
        row: a row of a crop batch.

    Returns:
        One line for a person to find the crop.
    """
    aspect = "unknown" if pd.isna(row["aspect"]) else f"{row['aspect']:.2f}"
    return f"{row['where']}: crop {row['width']:g}x{row['height']:g} (w/h {aspect})"


def quote(text: str) -> str:
    """A caption as a JSON string literal, cut to a readable length.

    Args:
        text: the caption.

    Returns:
        The quoted excerpt.
    """
    short = text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."
    return json.dumps(short, ensure_ascii=False)
