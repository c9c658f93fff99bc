"""What a curation run did: one :class:`ShardReport` per shard, and the run's :class:`CurationReport`."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gadms.markdown import markdown_table

EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 300


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
        failure_examples: per reason, the first few failed samples as ``"KEY: what is wrong"``.
        problems: shard-level trouble (e.g. a truncated tar).
        timings: seconds per stage (not written to disk: it is not reproducible).
        skipped: True when the shard was already done and was not processed again.
        replaced: why a finished shard of this name was curated again (``"input changed"``,
            ``"parameters changed"``); empty when there was none.
        earlier: True for a finished shard of an earlier run that is not in this run's input (kept as it is).
        other_params: True when an ``earlier`` shard was curated with other parameters than this run's.
        source_name: the source shard's name when the curated shard has another one (``OUT`` already held a
            shard of that name curated from another input); empty otherwise.
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
    failure_examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    skipped: bool = False
    replaced: str = ""
    earlier: bool = False
    other_params: bool = False
    source_name: str = ""

    def fail(self, reason: str, key: str, detail: str) -> None:
        """Count one failed sample; the first few of each reason are kept with what was wrong."""
        self.failed += 1
        self.failures[reason] += 1
        examples = self.failure_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{key}: {detail}"[:EXAMPLE_CHARS] if detail else key[:EXAMPLE_CHARS])

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
            "failure_examples": dict(sorted(self.failure_examples.items())),
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ShardReport":
        """Rebuild a report read back from a done marker."""
        return cls(
            shard=raw["shard"],
            seen=raw["seen"],
            kept=raw["kept"],
            rejected=raw["rejected"],
            failed=raw["failed"],
            crops=raw["crops"],
            captions=raw["captions"],
            boxes=Counter(raw["boxes"]),
            failures=Counter(raw["failures"]),
            failure_examples={k: list(v) for k, v in raw.get("failure_examples", {}).items()},
            problems=list(raw["problems"]),
            skipped=True,
        )


@dataclass
class CurationReport:
    """The whole run: per-shard reports and their totals."""

    out: Path
    shards: list[ShardReport]

    def totals(self) -> dict[str, Any]:
        """Sums over shards of every count."""
        total: dict[str, Any] = {
            k: sum(getattr(s, k) for s in self.shards)
            for k in ("seen", "kept", "rejected", "failed", "crops", "captions")
        }
        total["boxes"] = dict(sorted(sum((s.boxes for s in self.shards), Counter()).items()))
        total["failures"] = dict(sorted(sum((s.failures for s in self.shards), Counter()).items()))
        return total

    def to_dict(self) -> dict[str, Any]:
        """Totals plus every shard's report, for ``report.json``."""
        return {"totals": self.totals(), "shards": [s.to_dict() for s in self.shards]}

    def markdown(self) -> str:
        """The counts per shard as a Markdown table (the Prefect artifact ``curation-report``)."""
        header = ("shard", "seen", "kept", "rejected", "failed", "crops", "boxes")
        rows = [
            (
                s.shard,
                s.seen,
                s.kept,
                s.rejected,
                s.failed,
                s.crops,
                ", ".join(f"{k} {v}" for k, v in sorted(s.boxes.items())),
            )
            for s in self.shards
        ]
        return "# Curation\n\n" + markdown_table(header, rows)

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
            first = [(s.shard, r, e[0]) for s in self.shards for r, e in sorted(s.failure_examples.items()) if e]
            if first:  # reports written before examples were kept have none
                shard, reason, example = first[0]
                lines.append(f"  first failure ({reason}, shard {shard}): {example}")
        problems = [p for s in self.shards for p in s.problems]
        if problems:
            lines.append(f"  {len(problems)} shard problems, first: {problems[0]}")
        replaced = [f"{s.shard} ({s.replaced})" for s in self.shards if s.replaced]
        if replaced:
            lines.append(f"  re-curated {len(replaced)} finished shard(s), replacing them: {_listed(replaced)}")
        renamed = [f"{s.source_name} as {s.shard}" for s in self.shards if s.source_name]
        if renamed:
            lines.append(
                f"  added {len(renamed)} shard(s) under a new name, {self.out} already holding a shard of that "
                f"name from another input: {_listed(renamed)}"
            )
        done = sum(s.skipped and not s.earlier for s in self.shards)
        if done:
            lines.append(f"  {done} shard(s) were already done and were skipped")
        earlier = [s for s in self.shards if s.earlier]
        if earlier:
            other = sum(s.other_params for s in earlier)
            note = f" ({other} curated with other parameters)" if other else ""
            lines.append(
                f"  kept {len(earlier)} shard(s) of earlier runs that are not in this input{note}: "
                f"{_listed([s.shard for s in earlier])}"
            )
        return "\n".join(lines)


def _listed(names: Sequence[str], limit: int = 5) -> str:
    """The first few names, comma-separated, with how many more there are."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
