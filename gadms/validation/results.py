"""What the caption quality gate reports: per-check results, the gate verdict, and its errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class GateError(ValueError):
    """The corpus cannot be gated (missing, empty, unreadable); the message is one line."""


class GateFailed(GateError):
    """The gate did not pass on this exact data (no verdict, a failed one, or changed data); one line."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of the gate.

    Attributes:
        name: the check, named like its ``MostlyConfig`` field (or ``"duplicates"``).
        passed: whether the check passed.
        unexpected_share: share of rows (captions or crops) that fail the check;
            for ``duplicates``, the share of captions whose text occurs more than once
            (every copy counts, the first too, as in GX's uniqueness expectation).
        mostly: share of rows that must pass (``1 - mostly`` is the allowed failing share).
        examples: up to three offending rows, each ``"WHERE: what"`` for a person to look up.
    """

    name: str
    passed: bool
    unexpected_share: float
    mostly: float
    examples: list[str] = field(default_factory=list)

    @property
    def allowed_share(self) -> float:
        """The largest failing share the check tolerates."""
        return max(0.0, 1.0 - self.mostly)


@dataclass(frozen=True)
class GateResult:
    """The verdict of the quality gate on one curated corpus.

    Attributes:
        passed: whether every check passed.
        checks: one result per check, in a fixed order.
        captions: caption rows checked (a sample with no readable captions counts as one empty caption).
        samples: samples (crops) checked.
        summary: the text of ``summary.txt``.
        docs_index: the Data Docs ``index.html``, if it exists.
        fingerprint: sha256 over the shards' names and bytes, in name order.
    """

    passed: bool
    checks: list[CheckResult]
    captions: int
    samples: int
    summary: str
    docs_index: Path | None
    fingerprint: str

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed, in check order."""
        return [c.name for c in self.checks if not c.passed]

    def to_dict(self, report_dir: Path) -> dict[str, Any]:
        """The machine-readable form written to ``gate.json`` (no timestamps, paths relative to ``report_dir``).

        Args:
            report_dir: the folder ``gate.json`` lives in.

        Returns:
            A JSON-ready mapping.
        """
        docs = None if self.docs_index is None else self.docs_index.relative_to(report_dir).as_posix()
        return {
            "passed": self.passed,
            "fingerprint": self.fingerprint,
            "samples": self.samples,
            "captions": self.captions,
            "failed_checks": self.failed_checks,
            "checks": [asdict(c) for c in self.checks],
            "docs_index": docs,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], report_dir: Path, summary: str = "") -> "GateResult":
        """Rebuild a result from ``gate.json``.

        Args:
            raw: the parsed ``gate.json``.
            report_dir: the folder it was read from (Data Docs paths are relative to it).
            summary: the text of ``summary.txt``, if read.

        Returns:
            The result; ``KeyError``/``TypeError`` when a field is missing or malformed.
        """
        docs = raw.get("docs_index")
        return cls(
            passed=bool(raw["passed"]),
            checks=[CheckResult(**c) for c in raw["checks"]],
            captions=int(raw["captions"]),
            samples=int(raw["samples"]),
            summary=summary,
            docs_index=None if docs is None else Path(report_dir) / docs,
            fingerprint=str(raw["fingerprint"]),
        )
