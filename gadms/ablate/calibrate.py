"""Fair rows: every masking row masks the same share of tokens, so rows differ only in which tokens they mask.

With ``ablate.noise_mask_rate`` set, each masking row's noise midpoint (``model.masking.noise_midpoint``) is
found by bisection so that, with the base model's token scores of that row (random, cosine, GASS paper or
official) on the noisy corpus's train captions, the mean noise-mask probability over caption tokens (start, end
and padding excluded) equals the rate. The row's other settings (slope, alpha_n) stay as they are. Reported per
row: the midpoint, the mean probability it gives and the **selectivity**, the mean noise-mask probability of the
wrong words divided by that of the correct colour words of the same captions (1 = masking does not tell them
apart). Calibrated on the base; the rows' scores drift as they train, so the rate holds at their start:
:func:`masking_now` measures both again with a cell's trained model (each cell's result keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from gadms.ablate.grounding import read_checkable, word_positions
from gadms.ablate.rows import row_params
from gadms.config import Params
from gadms.model.backbone import tokenizer
from gadms.model.gass import valid_token_mask
from gadms.model.masking import noise_mask_probability
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep

CAPTIONS = 256  # noisy train captions the calibration scores
ITERATIONS = 40


@dataclass(frozen=True)
class Calibration:
    """One row's calibrated midpoint, the mean noise-mask probability it gives and its selectivity."""

    row: str
    midpoint: float
    rate: float
    selectivity: float

    def override(self) -> str:
        """The ``--set`` that applies it."""
        return f"model.masking.noise_midpoint={round(self.midpoint, 6)!r}"


@dataclass(frozen=True)
class NoisySample:
    """Noisy train captions: their images, tokens, and per caption the wrong and correct colour-word positions."""

    images: torch.Tensor
    tokens: torch.Tensor
    wrong: list[list[int]]
    right: list[list[int]]


def noisy_sample(corpus: Path, params: Params, limit: int = CAPTIONS) -> NoisySample:
    """Up to ``limit`` noisy captions of the checkable corpus's train split."""
    m = params.model
    data = read_checkable(corpus, "train", m.image_height, m.image_width)
    tok = tokenizer(m.context_length)
    picked = [k for k in range(len(data.captions)) if data.wrong[k]][:limit]
    if not picked:
        raise ValueError(f"{corpus}: no noisy train captions to calibrate the rows on (ablate.corpus.caption_noise)")
    wrong, right = [], []
    for k in picked:
        positions = word_positions(tok, data.captions[k], data.slots[k])
        wrong.append([p for p, (s, _, _) in zip(positions, data.slots[k]) if s in data.wrong[k]])
        right.append([p for p, (s, _, _) in zip(positions, data.slots[k]) if s not in data.wrong[k]])
    images = data.images[[data.image_of[k] for k in picked]]
    return NoisySample(images, tok([data.captions[k] for k in picked]), wrong, right)


def row_scores(params: Params, model: PersonRetrievalModel, sample: NoisySample) -> torch.Tensor | None:
    """The row's token scores of the sample from ``model`` (None for a row that masks nothing)."""
    step = TrainingStep(params.model, params.loss, seed=params.seed)
    model.eval()
    with torch.no_grad():
        features = model.encode_image(sample.images)[0]
    return step.token_scores(model, sample.tokens, features)


def midpoint_for(scores: torch.Tensor, valid: torch.Tensor, alpha: float, slope: float, rate: float) -> float:
    """The noise midpoint in [0, 1] whose mean noise-mask probability over ``valid`` tokens is ``rate``.

    The probability falls as the midpoint grows; a rate out of reach gives the nearer end of [0, 1].
    """
    lo, hi = 0.0, 1.0
    for _ in range(ITERATIONS):
        mid = (lo + hi) / 2
        mean = float(noise_mask_probability(scores, alpha, slope, mid)[valid].mean())
        lo, hi = (mid, hi) if mean > rate else (lo, mid)
    return (lo + hi) / 2


def mask_rates(
    scores: torch.Tensor, sample: NoisySample, alpha: float, slope: float, midpoint: float
) -> tuple[float, float]:
    """The mean noise-mask probability over caption tokens and the selectivity (wrong words over correct ones)."""
    p = noise_mask_probability(scores, alpha, slope, midpoint)
    wrong = torch.cat([p[i, w] for i, w in enumerate(sample.wrong)])
    right = torch.cat([p[i, r] for i, r in enumerate(sample.right)])
    return float(p[valid_token_mask(sample.tokens)].mean()), float(wrong.mean() / right.mean().clamp_min(1e-12))


def calibrate_row(params: Params, row: str, model: PersonRetrievalModel, sample: NoisySample) -> Calibration | None:
    """One row's calibration (None for a row without noise masking)."""
    cell = row_params(params, row, params.seed, None)
    scores = row_scores(cell, model, sample)
    if scores is None:
        return None
    rate = params.ablate.noise_mask_rate
    assert rate is not None
    m = cell.model.masking
    midpoint = midpoint_for(scores, valid_token_mask(sample.tokens), m.alpha_noise, m.slope, rate)
    return Calibration(row, midpoint, *mask_rates(scores, sample, m.alpha_noise, m.slope, midpoint))


def masking_now(cell: Params, model: PersonRetrievalModel, sample: NoisySample) -> dict[str, float] | None:
    """What a row's masking does with ``model`` (a trained cell) at the row's own midpoint: ``rate`` (mean
    noise-mask probability) and ``selectivity``; None for a row without noise masking. Set beside the
    calibration on the base, it shows how far the row's scores drifted while it trained."""
    scores = row_scores(cell, model, sample)
    if scores is None:
        return None
    m = cell.model.masking
    rate, selectivity = mask_rates(scores, sample, m.alpha_noise, m.slope, m.noise_midpoint)
    return {"rate": rate, "selectivity": selectivity}


def calibrate(params: Params, rows: Sequence[str], weights: Path, corpus: Path) -> dict[str, Calibration]:
    """Every masking row's calibration on the base ``weights`` and the checkable noisy ``corpus``."""
    model = PersonRetrievalModel(Architecture.from_config(params.model))
    model.load_clip_weights(str(weights))
    sample = noisy_sample(corpus, params)
    out = {}
    for row in rows:
        found = calibrate_row(params, row, model, sample)
        if found is not None:
            out[row] = found
    return out


def format_calibrations(calibrations: dict[str, Calibration]) -> str:
    """Per row: the midpoint, the mean noise-mask probability and the selectivity."""
    lines = [f"{'row':<14} {'noise midpoint':>14} {'mean p(mask)':>12} {'selectivity wrong/correct':>26}"]
    for c in calibrations.values():
        lines.append(f"{c.row:<14} {c.midpoint:>14.4f} {c.rate:>12.3f} {c.selectivity:>25.2f}x")
    return "\n".join(lines)
