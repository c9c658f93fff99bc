"""Samples of the streaming readers (WebPerson, curated shards) and the tally of what they skipped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple


class Sample(NamedTuple):
    """One image with its captions; unpacks as ``(image_bytes, captions, key)``."""

    image: bytes
    captions: list[str]
    key: str


@dataclass
class StreamTally:
    """What a streaming reader yielded and skipped; filled in while the stream is consumed.

    Attributes:
        shards: shards opened (including ones that turned out bad).
        samples: samples yielded.
        captions: captions in the yielded samples.
        skipped: skipped samples/rows by reason.
        bad_shards: ``"PATH: why"`` for each shard that could not be read to its end.
    """

    shards: int = 0
    samples: int = 0
    captions: int = 0
    skipped: Counter = field(default_factory=Counter)
    bad_shards: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Skipped samples plus unreadable shards."""
        return sum(self.skipped.values()) + len(self.bad_shards)

    def report(self, label: str) -> str:
        """One-line summary of what was read and skipped.

        Args:
            label: what was read, e.g. the directory.

        Returns:
            ``"LABEL: N samples, M captions from S shards; skipped ...; bad shards ..."``.
        """
        text = f"{label}: {self.samples} samples, {self.captions} captions from {self.shards} shards"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        if self.bad_shards:
            text += f"; {len(self.bad_shards)} bad shards (first: {self.bad_shards[0]})"
        return text
