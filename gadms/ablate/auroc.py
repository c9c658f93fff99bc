"""How well token scores find injected wrong words, from the base model and after GA-DMS, on the testbed.

    python -m gadms.ablate.auroc --params params.ablate.yaml [--rows gass gass-official] [--seed 0]

Run after ``gadms ablate`` (it reads the base weights and the cells' models from ``ablate.out_dir``; the base
is built if missing). For each model it scores captions with GASS (paper and official formulas), the cosine
(CSS) baseline and random scores; the AUROC is the probability that a correct attribute word of a caption
scores above a known-wrong one (0.5 = chance). Caption sets: the noisy corpus's train captions (the wrong words
the rows trained on) and held-out test images with freshly injected wrong words (identities no stage saw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gadms.config import Params, load_params
from gadms.eval.metrics import auroc
from gadms.model.backbone import tokenizer
from gadms.model.figures import word_scores
from gadms.model.gass import GassScorer, cosine_token_scores, random_token_scores
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.synth.attributes import Identity
from gadms.synth.captions import build_pieces, inject_noise
from gadms.synth.noise import ATTRIBUTE_WORDS, NoisyCaption, load_image

SCORERS = ("gass-paper", "gass-official", "cosine", "random", "occlusion")


@torch.no_grad()
def occlusion_token_scores(clip, tokens: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
    """A diagnostic, not a masking score: how much the caption-image cosine drops when each token is masked.

    Tells whether the model relies on single words at all (GASS's first-order attribution aside).
    """
    from gadms.model.backbone import MASK_TOKEN_ID
    from gadms.model.gass import minmax, valid_token_mask
    from gadms.model.text_tower import encode_text

    valid = valid_token_mask(tokens)
    image = torch.nn.functional.normalize(image_features, dim=-1)
    whole = torch.nn.functional.normalize(encode_text(clip, tokens).features, dim=-1) @ image.T
    n = tokens.shape[1]
    variants = tokens.repeat(n, 1)
    variants[torch.arange(n), torch.arange(n)] = MASK_TOKEN_ID
    masked = torch.nn.functional.normalize(encode_text(clip, variants).features, dim=-1) @ image.T
    drop = (whole[0, 0] - masked[:, 0]).unsqueeze(0)
    return minmax(drop, valid)


def _records(root: Path) -> tuple[list[dict], list[dict]]:
    bench = Path(root) / "CUHK-PEDES"
    records = json.loads((bench / "reid_raw.json").read_text(encoding="utf-8"))
    truth = json.loads((bench / "synthetic_truth.json").read_text(encoding="utf-8"))["records"]
    return records, truth


def seen_noisy(root: Path, limit: int) -> tuple[list[dict], list[NoisyCaption]]:
    """The corpus's train captions that carry wrong words (at most ``limit``), with their images' records."""
    records, truth = _records(root)
    items = [
        NoisyCaption(i, records[i]["captions"][c], [s["start"] for s in spans])
        for i, r in enumerate(records)
        if r["split"] == "train"
        for c, spans in enumerate(truth[i]["noise_spans"])
        if spans
    ]
    return records, items[:limit]


def fresh_noisy(root: Path, split: str, limit: int, seed: int, words: int = 1) -> tuple[list[dict], list[NoisyCaption]]:
    """New captions of ``split`` images with ``words`` injected wrong attribute words each (at most ``limit``)."""
    records, truth = _records(root)
    items: list[NoisyCaption] = []
    for i, r in enumerate(records):
        if r["split"] != split or len(items) >= limit:
            continue
        rng = np.random.default_rng([seed, 0xA11C, i])
        identity = Identity.from_dict(truth[i]["attributes"])
        caption, spans = inject_noise(build_pieces(identity, truth[i]["pose"], rng), identity, rng, words)
        items.append(NoisyCaption(i, caption, [s.start for s in spans]))
    return records, items


def _scorers(params: Params, seed: int) -> dict[str, Callable[..., torch.Tensor]]:
    g = params.model.gass
    generator = torch.Generator().manual_seed(seed)
    return {
        "gass-paper": GassScorer(g.layers, g.scales, "paper"),
        "gass-official": GassScorer(g.layers, g.scales, "official"),
        "cosine": cosine_token_scores,
        "random": lambda m, t, f: random_token_scores(t, generator),
        "occlusion": occlusion_token_scores,
    }


def word_values(model, tok, items: list[NoisyCaption], features: torch.Tensor, scorer) -> list[tuple[list, list]]:
    """Per caption: the scores of its known-wrong words and of its other (correct) attribute words."""
    out = []
    for item in items:
        tokens = tok([item.caption])
        wrong_idx = {len(tok.pat.findall(item.caption[:start].lower())) for start in item.wrong_starts}
        scores = scorer(model.clip, tokens, features[item.image : item.image + 1])
        wrong, right = [], []
        for j, (word, value) in enumerate(word_scores(tokens[0].tolist(), scores[0].tolist(), tok.decoder)):
            if j in wrong_idx:
                wrong.append(value)
            elif word in ATTRIBUTE_WORDS:
                right.append(value)
        out.append((wrong, right))
    return out


def paired_auroc(values: list[tuple[list, list]]) -> float:
    """Mean over captions of P(a correct word scores above a wrong word of the same caption), ties half."""
    per_caption = [auroc(wrong, right) for wrong, right in values if wrong and right]
    return float(np.mean(per_caption)) if per_caption else float("nan")


def caption_aurocs(
    model: PersonRetrievalModel, params: Params, root: Path, records: list[dict], items: list[NoisyCaption], seed: int
) -> dict[str, float]:
    """Per scorer: ``<scorer>`` the AUROC pooled over all captions, ``<scorer>/paired`` within each caption."""
    m = params.model
    bench = Path(root) / "CUHK-PEDES" / "imgs"
    used = sorted({item.image for item in items})
    position = {image: k for k, image in enumerate(used)}
    images = torch.stack([load_image(bench / records[i]["file_path"], m.image_height, m.image_width) for i in used])
    model.eval()
    with torch.no_grad():
        features = model.encode_image(images)[0]
    remapped = [NoisyCaption(position[it.image], it.caption, it.wrong_starts) for it in items]
    tok = tokenizer(m.context_length)
    out = {}
    for name, scorer in _scorers(params, seed).items():
        values = word_values(model, tok, remapped, features, scorer)
        out[name] = auroc([v for w, _ in values for v in w], [v for _, r in values for v in r])
        out[f"{name}/paired"] = paired_auroc(values)
    return out


def base_model(params: Params, weights: Path) -> PersonRetrievalModel:
    """A model whose CLIP part holds the base weights."""
    model = PersonRetrievalModel(Architecture.from_config(params.model))
    model.load_clip_weights(str(weights))
    return model


def measure(params: Params, models: dict[str, PersonRetrievalModel], limit: int = 300, seed: int = 0) -> list[Any]:
    """``[(model name, caption set, {scorer: AUROC})]`` on the testbed's seen-noisy and held-out captions."""
    from gadms.ablate.testbed import build_corpus

    cfg = params.ablate
    data = Path(cfg.out_dir) / "data"
    corpus = build_corpus("corpus", cfg.corpus, params.synth, data).root
    held_out = build_corpus("held-out", cfg.held_out, params.synth, data).root
    words = cfg.corpus.caption_noise_words
    sets = {
        "train captions (noisy, seen)": (corpus, *seen_noisy(corpus, limit)),
        "train images, fresh noise": (corpus, *fresh_noisy(corpus, "train", limit, seed, words)),
        "held-out identities, fresh noise": (held_out, *fresh_noisy(held_out, "test", limit, seed, words)),
    }
    rows = []
    for name, model in models.items():
        for set_name, (root, records, items) in sets.items():
            rows.append((name, set_name, caption_aurocs(model, params, root, records, items, seed)))
    return rows


def format_rows(rows: list[Any], paired: bool = False) -> str:
    """The AUROC table for a terminal / docs/ablation.md (``paired``: the within-caption AUROC)."""
    suffix = "/paired" if paired else ""
    lines = [f"{'model':<28} {'captions':<34} " + " ".join(f"{s:>13}" for s in SCORERS)]
    for name, set_name, values in rows:
        lines.append(f"{name:<28} {set_name:<34} " + " ".join(f"{values[s + suffix]:>13.3f}" for s in SCORERS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from gadms.ablate.base import ensure_base
    from gadms.ablate.cells import load_result
    from gadms.ablate.run import prepare
    from gadms.model.retrieval import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=None, help="the ablation's parameter file")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rows", nargs="*", default=["gass", "gass-official"], help="rows whose GA-DMS model to score")
    parser.add_argument("--seed", type=int, default=0, help="which seed's model of each row")
    parser.add_argument("--limit", type=int, default=300, help="captions per caption set")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.sets)
    models = {"base (clean pre-training)": base_model(params, ensure_base(params).weights)}
    plan = prepare(params, track=False, log=lambda _: None).plan
    for row in args.rows:
        result = load_result(plan, row, args.seed)
        if result is None:
            print(f"{row} seed {args.seed}: no finished result in {plan.out}; run gadms ablate first")
            continue
        models[f"GA-DMS {row} seed {args.seed}"] = load_model(Path(result["model"]))
    rows = measure(params, models, args.limit, args.seed)
    print("AUROC that a correct attribute word scores above a known-wrong one (0.5 = chance), pooled over captions")
    print(format_rows(rows))
    print("\nthe same within each caption (correct and wrong words of one caption compared), mean over captions")
    print(format_rows(rows, paired=True))


if __name__ == "__main__":
    main()
