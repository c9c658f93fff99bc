"""Per-caption token scores carried from one epoch to the next (``model.masking.score_timing: previous_epoch``).

The official GA-DMS code masks with scores stored per caption and computed in
an earlier epoch; in the first epoch every word token scores
``initial_score`` (0.85 there). Scores computed during an epoch are only used
from the next epoch on, whatever order the captions come in. Scores are kept
on the CPU as float16 (two bytes per position).
"""

from __future__ import annotations

import torch

from gadms.model.gass import valid_token_mask


class ScoreMemory:
    """Stored ``(N,)`` score rows keyed by caption index.

    Args:
        initial_score: score of every word token of a caption with nothing stored yet.
    """

    def __init__(self, initial_score: float = 0.85):
        self.initial_score = initial_score
        self.epoch = 0
        self.settled: dict[int, torch.Tensor] = {}  # from earlier epochs: what masking reads
        self.fresh: dict[int, torch.Tensor] = {}  # computed this epoch: read from the next epoch on

    def start_epoch(self, epoch: int) -> None:
        """Move to ``epoch``: scores of the epochs before it become readable."""
        if epoch != self.epoch:
            self.settled.update(self.fresh)
            self.fresh = {}
            self.epoch = epoch

    def lookup(self, indices: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)`` for the captions ``indices`` (``initial_score`` on word tokens where none is stored)."""
        valid = valid_token_mask(tokens)
        out = torch.full(tokens.shape, self.initial_score, dtype=torch.float32)
        for row, index in enumerate(indices.tolist()):
            stored = self.settled.get(int(index))
            if stored is not None and stored.shape[0] == tokens.shape[1]:
                out[row] = stored.float()
        return out.to(tokens.device) * valid

    def store(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep this epoch's ``scores`` ``(B, N)`` of the captions ``indices``."""
        for index, row in zip(indices.tolist(), scores.detach().cpu().to(torch.float16)):
            self.fresh[int(index)] = row.clone()

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (tensors only, loadable with ``weights_only``)."""

        def pack(rows: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
            keys = sorted(rows)
            scores = torch.stack([rows[k] for k in keys]) if keys else torch.zeros(0, 0, dtype=torch.float16)
            return {"indices": torch.tensor(keys, dtype=torch.long), "scores": scores}

        return {"epoch": self.epoch, "settled": pack(self.settled), "fresh": pack(self.fresh)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

        def unpack(packed: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
            return {int(k): row.clone() for k, row in zip(packed["indices"].tolist(), packed["scores"])}

        self.epoch = int(state["epoch"])
        self.settled, self.fresh = unpack(state["settled"]), unpack(state["fresh"])
