"""What a reader says about bad data: a one-line error, or a skipped record with its reason.

Below every reader (:mod:`gadms.storage`, :mod:`gadms.safe_files`, :mod:`gadms.data`, ...), so each can raise
:class:`DataError` without importing the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence


class DataError(ValueError):
    """Data that cannot be read; the one-line message names the file (and record) and what is wrong."""


class ImageError(DataError):
    """An image that cannot be decoded; the message names the file.

    A DataLoader worker's exception comes back to the main process rebuilt from
    its formatted traceback ("Caught ImageError in DataLoader worker process
    0. Original Traceback ..."); the message is then cut back to the original
    line, so the one-line report still names the file.
    """

    def __init__(self, message: str):
        if "Original Traceback" in message:
            lines = [line for line in message.strip().splitlines() if line.strip()]
            where = lines[0].removeprefix(f"Caught {type(self).__name__} ").rstrip(".")
            original = lines[-1].partition(f"{type(self).__name__}: ")[2] or lines[-1]
            message = f"{original} ({where})"
        super().__init__(message)


@dataclass(frozen=True)
class Problem:
    """One bad record that was skipped.

    Attributes:
        index: 0-based position of the record in its file (row or sample number for shards).
        reason: short category, e.g. ``"missing image"``, used to count problems.
        detail: what exactly is wrong, for a person reading the report.
    """

    index: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"record {self.index}: {self.detail}"


def describe_problems(label: str, problems: Sequence[Problem], examples: int = 3) -> str:
    """One paragraph: how many records were skipped, by reason, with the first few examples.

    Args:
        label: what was read, e.g. ``"cuhk-pedes test (/data/CUHK-PEDES/reid_raw.json)"``.
        problems: the skipped records.
        examples: how many problems to quote.

    Returns:
        A single-line summary, ``"LABEL: no bad records"`` when there are none.
    """
    if not problems:
        return f"{label}: no bad records"
    by_reason = Counter(p.reason for p in problems)
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    first = "; ".join(str(p) for p in problems[:examples])
    noun = "record" if len(problems) == 1 else "records"
    return f"{label}: {len(problems)} bad {noun} skipped ({reasons}); first: {first}"
