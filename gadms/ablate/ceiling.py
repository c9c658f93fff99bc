"""The ceiling check (``gadms ablate ceiling``): does the base see every word a row's masking could find?

On held-out test captions of the checkable world (identities no stage trained on) the base model is asked two
things. **Lowering**: for each caption and each slot (top, bottom, shoe, bag colour), the caption with that
slot's colour swapped (a bagless person's caption gains a bag) must score a lower image-caption cosine than the
caption itself; the share of swaps that do, per slot. **Occlusion AUROC**: each caption gets fresh noise
(``ablate.corpus.caption_noise_words`` wrong slots); each colour word's occlusion score is how much the cosine
falls when that word alone is replaced by the mask token; the same-slot AUROC is the probability that a correct
word of a slot scores above a wrong word of the same slot (pairs across captions, ties half), per slot and
pooled over the slots' pairs. Occlusion is the most direct token score there is: when it cannot find the wrong
words, no masking score can, and the rows cannot differ for the reason the paper claims.

The check passes when the pooled AUROC reaches ``ablate.ceiling.min_auroc`` and every slot's lowering share
reaches ``ablate.ceiling.min_lowering``. The result is cached as ``ceiling-<digest>.json`` beside the base
weights (the digest of the base, the held-out corpus and the check's settings).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gadms.ablate.base import base_dir, ensure_base
from gadms.ablate.grounding import read_checkable, word_positions
from gadms.ablate.rows import digest
from gadms.ablate.testbed import build_corpus
from gadms.config import Params
from gadms.model.backbone import MASK_TOKEN_ID, tokenizer
from gadms.model.gass import GassScorer, cosine_token_scores, random_token_scores
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.reproducible_writes import write_bytes_atomic
from gadms.synth.checkable import CHECKABLE_COLORS, SLOTS, inject_checkable_noise, swap_one

CHUNK = 256


@dataclass(frozen=True)
class Ceiling:
    """The check's figures: per slot and pooled AUROC, per slot and overall lowering share, the verdict."""

    auroc: dict[str, float]  # slot -> same-slot AUROC; "pooled"
    lowering: dict[str, float]  # slot -> share of swaps that lower the cosine; "all"
    captions: int
    wrong_words: int
    passed: bool
    min_auroc: float
    min_lowering: float
    seconds: float
    scorers: dict[str, dict[str, float]] = field(default_factory=dict)  # the rows' scores' same-slot AUROC


def pair_counts(negatives: list[float], positives: list[float]) -> tuple[float, int]:
    """``(positive-above-negative pairs + half the ties, pairs)``."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    if not len(neg) or not len(pos):
        return 0.0, 0
    above = float((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
    return above, len(neg) * len(pos)


def _cosines(model: PersonRetrievalModel, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Cosine of each caption with its image's (normalised) feature row, in chunks."""
    out = []
    for start in range(0, len(tokens), CHUNK):
        text = F.normalize(model.encode_text(tokens[start : start + CHUNK]), dim=-1)
        out.append((text * image[start : start + CHUNK]).sum(dim=-1))
    return torch.cat(out)


@torch.no_grad()
def measure_ceiling(params: Params, model: PersonRetrievalModel, held_out: Path) -> Ceiling:
    """The check on ``held_out``'s test split with the base ``model`` (see the module's text)."""
    started = time.perf_counter()
    m, cfg = params.model, params.ablate.ceiling
    data = read_checkable(held_out, "test", m.image_height, m.image_width)
    tok = tokenizer(m.context_length)
    model.eval()
    features = F.normalize(model.encode_image(data.images)[0], dim=-1)
    count = min(cfg.captions, len(data.captions))
    words = params.ablate.corpus.caption_noise_words
    texts: list[str] = []
    image_rows: list[int] = []
    mask_at: dict[int, int] = {}  # text index -> token position replaced by the mask token
    swaps: list[tuple[int, int, str]] = []  # (index of the clean caption's text, index of the swap's, slot)
    occluded: list[tuple[int, int, str, bool]] = []  # (noisy text, occluded text, slot, wrong)
    noisy_words: list[tuple[int, int, str, bool]] = []  # (noisy text, token position, slot, wrong)
    for k in range(count):
        rng = np.random.default_rng([params.ablate.held_out.seed, 0xCE11, k])
        identity, template, image = data.identities[k], data.templates[k], data.image_of[k]
        clean = len(texts)
        texts.append(data.captions[k])
        image_rows.append(image)
        for slot in SLOTS:
            truth = str(getattr(identity, slot))
            color = str(rng.choice([c for c in CHECKABLE_COLORS if c != truth]))
            swaps.append((clean, len(texts), slot))
            texts.append(swap_one(identity, template, slot, color)[0])
            image_rows.append(image)
        caption, wrong, spans = inject_checkable_noise(identity, template, rng, words)
        wrong_starts = {w.start for w in wrong}
        noisy = len(texts)
        texts.append(caption)
        image_rows.append(image)
        for (start, _, slot), position in zip(spans, word_positions(tok, caption, spans)):
            occluded.append((noisy, len(texts), slot, start in wrong_starts))
            noisy_words.append((noisy, position, slot, start in wrong_starts))
            mask_at[len(texts)] = position
            texts.append(caption)
            image_rows.append(image)
    tokens = tok(texts)
    for t, position in mask_at.items():
        tokens[t, position] = MASK_TOKEN_ID
    cos = _cosines(model, tokens, features[image_rows])
    lowering = {slot: float(np.mean([cos[s] < cos[c] for c, s, sl in swaps if sl == slot])) for slot in SLOTS}
    lowering["all"] = float(np.mean([cos[s] < cos[c] for c, s, _ in swaps]))
    auroc = same_slot_auroc([(slot, w, float(cos[n] - cos[o])) for n, o, slot, w in occluded])
    scorers = scorer_aurocs(params, model, tokens, features[image_rows], noisy_words)
    passed = auroc["pooled"] >= cfg.min_auroc and all(lowering[s] >= cfg.min_lowering for s in SLOTS)
    wrong_words = sum(1 for *_, w in occluded if w)
    seconds = time.perf_counter() - started
    return Ceiling(auroc, lowering, count, wrong_words, passed, cfg.min_auroc, cfg.min_lowering, seconds, scorers)


def same_slot_auroc(values: list[tuple[str, bool, float]]) -> dict[str, float]:
    """Per slot and pooled: P(a correct word scores above a wrong word of the same slot), ties half."""
    out: dict[str, float] = {}
    above_all, pairs_all = 0.0, 0
    for slot in SLOTS:
        mine = [(w, v) for sl, w, v in values if sl == slot]
        above, pairs = pair_counts([v for w, v in mine if w], [v for w, v in mine if not w])
        out[slot] = above / pairs if pairs else float("nan")
        above_all, pairs_all = above_all + above, pairs_all + pairs
    out["pooled"] = above_all / pairs_all if pairs_all else float("nan")
    return out


def scorer_aurocs(
    params: Params,
    model: PersonRetrievalModel,
    tokens: torch.Tensor,
    image_features: torch.Tensor,
    words: list[tuple[int, int, str, bool]],
) -> dict[str, dict[str, float]]:
    """The rows' token scores (GASS paper / official, cosine, random) on the noisy captions: same-slot AUROC."""
    g = params.model.gass
    generator = torch.Generator().manual_seed(params.seed)
    scorers: dict[str, Callable[..., torch.Tensor]] = {
        "gass-paper": GassScorer(g.layers, g.scales, "paper"),
        "gass-official": GassScorer(g.layers, g.scales, "official"),
        "cosine": cosine_token_scores,
        "random": lambda clip, t, f: random_token_scores(t, generator),
    }
    texts = sorted({t for t, *_ in words})
    row = {t: k for k, t in enumerate(texts)}
    out = {}
    for name, scorer in scorers.items():
        scores = torch.cat(
            [
                scorer(model.clip, tokens[texts[s : s + CHUNK]], image_features[texts[s : s + CHUNK]])
                for s in range(0, len(texts), CHUNK)
            ]
        )
        out[name] = same_slot_auroc([(slot, w, float(scores[row[t], p])) for t, p, slot, w in words])
    return out


def ceiling_path(params: Params, held_out_key: str, base_key: str) -> Path:
    """Where the check of this base on this held-out corpus is cached."""
    settings = {
        "ceiling": params.ablate.ceiling.model_dump(mode="json"),
        "held_out": held_out_key,
        "words": params.ablate.corpus.caption_noise_words,
        "base": base_key,
        "figures": 2,  # what the cached file holds (2: the rows' scores' AUROC too)
    }
    return base_dir(params) / f"ceiling-{digest(settings)[:16]}.json"


def check_ceiling(params: Params, device: str = "cpu", log: Callable[[str], None] = lambda _: None) -> Ceiling:
    """Build (or reuse) the base and the held-out corpus, then run (or reuse) the check; one-line errors.

    Raises:
        ValueError: the held-out corpus is not checkable, or the rows start from ``model.pretrained``.
    """
    cfg = params.ablate
    if cfg.held_out.vocabulary != "checkable":
        raise ValueError("the ceiling check needs ablate.held_out.vocabulary: checkable (words the model can see)")
    if params.model.pretrained is not None or not cfg.base.enabled:
        raise ValueError("the ceiling check measures the base stage: needs ablate.base.enabled and no model.pretrained")
    held_out = build_corpus("held-out", cfg.held_out, params.synth, Path(cfg.out_dir) / "data")
    base = ensure_base(params, device, log=log)
    log(f"base weights {base.weights} ({'built in %.0fs' % base.seconds if base.built else 'reused'})")
    path = ceiling_path(params, held_out.key, base.key)
    if path.is_file():
        return Ceiling(**json.loads(path.read_text(encoding="utf-8")))
    model = PersonRetrievalModel(Architecture.from_config(params.model))
    model.load_clip_weights(str(base.weights))
    result = measure_ceiling(params, model, held_out.root)
    write_bytes_atomic(path, json.dumps(asdict(result), indent=1).encode("utf-8"))
    return result


def format_ceiling(result: Ceiling) -> str:
    """The check for a terminal: per slot AUROC and lowering share, the pooled figures and a PASS/FAIL line."""
    lines = [f"{'slot':<14} {'occlusion AUROC':>16} {'swaps lowering':>15}"]
    for slot in SLOTS:
        lines.append(f"{slot:<14} {result.auroc[slot]:>16.3f} {result.lowering[slot]:>14.1%}")
    lines.append(f"{'pooled':<14} {result.auroc['pooled']:>16.3f} {result.lowering['all']:>14.1%}")
    if result.scorers:
        lines.append("")
        lines.append("the rows' token scores on the same captions, same-slot AUROC (occlusion is the ceiling):")
        lines.append(f"{'scores':<14} " + " ".join(f"{s:>12}" for s in (*SLOTS, "pooled")))
        for name, values in {"occlusion": result.auroc, **result.scorers}.items():
            lines.append(f"{name:<14} " + " ".join(f"{values[s]:>12.3f}" for s in (*SLOTS, "pooled")))
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(
        f"ceiling {verdict}: pooled same-slot AUROC {result.auroc['pooled']:.3f} (target >= {result.min_auroc}), "
        f"lowest slot lowering {min(result.lowering[s] for s in SLOTS):.1%} (target >= {result.min_lowering:.0%}); "
        f"{result.captions} held-out captions, {result.wrong_words} wrong words"
    )
    return "\n".join(lines)


def ceiling_line(result: Ceiling) -> str | None:
    """For the table: None when the ceiling holds, else the one line saying the rows are not comparable."""
    if result.passed:
        return None
    return (
        f"ceiling FAIL (occlusion AUROC {result.auroc['pooled']:.3f} < {result.min_auroc} or a slot's lowering "
        f"< {result.min_lowering:.0%}): the base does not see the words, rows are not comparable"
    )
