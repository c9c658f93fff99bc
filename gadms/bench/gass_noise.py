"""How well do token scores find hallucinated words? AUROC on the synthetic world.

    python -m gadms.bench.gass_noise [--identities 200] [--steps 400] [--figure scores.png]

Builds a synthetic benchmark whose train captions carry injected wrong
attribute words (``--caption-noise``), trains the tiny backbone from scratch
on it for a short while, then scores captions with GASS, the cosine (CSS)
baseline and random scores. For each caption with a known-wrong word, every
other attribute word of the caption is a "correct" word; the AUROC is the
probability that a correct word scores above a wrong one (0.5 = chance).
Reported on the noisy train captions the model saw, and on fresh noisy
captions (new wrong words) of train and test images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gadms.config import LossConfig, ModelConfig, SynthConfig
from gadms.eval.metrics import auroc
from gadms.model.backbone import tokenizer
from gadms.model.figures import token_score_figure, word_scores
from gadms.model.gass import GassScorer, cosine_token_scores, random_token_scores
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep
from gadms.synth.attributes import Identity
from gadms.synth.benchmark import write_benchmark
from gadms.synth.captions import build_pieces, inject_noise
from gadms.synth.noise import ATTRIBUTE_WORDS, NoisyCaption, load_image


def _train(model, images, tokens, identities, steps: int, batch: int, lr: float, seed: int, progress: bool) -> float:
    """A short contrastive training run (ITC) from scratch; returns seconds."""
    step = TrainingStep(
        ModelConfig(context_length=tokens.shape[-1]),
        LossConfig(sdm={"enabled": False}, mtp={"enabled": False}, itc={"enabled": True}),
        mode="sdm",
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8, weight_decay=4e-5)
    g = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for it in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        which = torch.randint(tokens.shape[1], (batch,), generator=g)
        flip = torch.rand(batch, generator=g) < 0.5
        imgs = torch.where(flip[:, None, None, None], images[idx].flip(-1), images[idx])
        out = step(model, imgs, tokens[idx, which], identities=identities[idx])
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        if progress and it % 50 == 0:
            print(f"  step {it:4d}  itc_loss {out.total.item():.3f}", flush=True)
    return time.perf_counter() - started


def _word_aurocs(model, tok, captions: list[NoisyCaption], features: torch.Tensor, scorers: dict) -> dict[str, float]:
    wrong: dict[str, list[float]] = {name: [] for name in scorers}
    right: dict[str, list[float]] = {name: [] for name in scorers}
    for item in captions:
        tokens = tok([item.caption])
        wrong_idx = {len(tok.pat.findall(item.caption[:start].lower())) for start in item.wrong_starts}
        for name, scorer in scorers.items():
            scores = scorer(model.clip, tokens, features[item.image : item.image + 1])
            for j, (word, value) in enumerate(word_scores(tokens[0].tolist(), scores[0].tolist(), tok.decoder)):
                if j in wrong_idx:
                    wrong[name].append(value)
                elif word in ATTRIBUTE_WORDS:
                    right[name].append(value)
    return {name: auroc(wrong[name], right[name]) for name in scorers}


def noise_detection_auroc(
    identities: int = 200,
    steps: int = 400,
    batch: int = 64,
    lr: float = 5e-4,
    noise: float = 0.3,
    seed: int = 0,
    context_length: int = 48,
    figure: Path | None = None,
    progress: bool = True,
    workdir: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Train the tiny model on noisy synthetic captions and measure how scores rank wrong words.

    Returns:
        ``{caption set: {scorer: AUROC}}`` plus ``{"run": {"train_s": ..., "wrong_words": ...}}``.
    """
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        bench = write_benchmark(Path(tmp), identities, seed, SynthConfig(caption_noise=noise), progress=False)
        records = json.loads((bench.root / "reid_raw.json").read_text(encoding="utf-8"))
        truth = json.loads((bench.root / "synthetic_truth.json").read_text(encoding="utf-8"))["records"]
        model_cfg = ModelConfig(context_length=context_length)
        images = torch.stack(
            [
                load_image(bench.root / "imgs" / r["file_path"], model_cfg.image_height, model_cfg.image_width)
                for r in records
            ]
        )
    tok = tokenizer(context_length)
    tokens = torch.stack([tok(r["captions"]) for r in records])
    ids = torch.tensor([r["id"] for r in records])
    train = [i for i, r in enumerate(records) if r["split"] == "train"]
    test = [i for i, r in enumerate(records) if r["split"] == "test"]
    model = PersonRetrievalModel(Architecture.from_config(model_cfg))
    train_s = _train(model, images[train], tokens[train], ids[train], steps, batch, lr, seed, progress)
    model.eval()
    with torch.no_grad():
        features = model.encode_image(images)[0]

    seen = [
        NoisyCaption(i, records[i]["captions"][c], [s["start"] for s in spans])
        for i in train
        for c, spans in enumerate(truth[i]["noise_spans"])
        if spans
    ]

    def fresh(indices: list[int]) -> list[NoisyCaption]:
        out = []
        for i in indices:
            rng = np.random.default_rng([seed, 0xF7E5, i])
            caption, spans = inject_noise(
                build_pieces(Identity.from_dict(truth[i]["attributes"]), truth[i]["pose"], rng),
                Identity.from_dict(truth[i]["attributes"]),
                rng,
            )
            out.append(NoisyCaption(i, caption, [s.start for s in spans]))
        return out

    gass = GassScorer(model_cfg.gass.layers, model_cfg.gass.scales)
    g = torch.Generator().manual_seed(seed)
    scorers = {"gass": gass, "cosine": cosine_token_scores, "random": lambda m, t, f: random_token_scores(t, g)}
    results = {
        "train captions seen (noisy)": _word_aurocs(model, tok, seen, features, scorers),
        "train images, fresh noise": _word_aurocs(model, tok, fresh(train), features, scorers),
        "test images, fresh noise": _word_aurocs(model, tok, fresh(test), features, scorers),
        "run": {"train_s": train_s, "wrong_words_seen": float(len(seen))},
    }
    if figure is not None:
        sample = fresh(test)[:6]
        toks = tok([s.caption for s in sample])
        scores = torch.cat(
            [gass(model.clip, toks[k : k + 1], features[s.image : s.image + 1]) for k, s in enumerate(sample)]
        )
        wrong = [{len(tok.pat.findall(s.caption[:start].lower())) for start in s.wrong_starts} for s in sample]
        token_score_figure(toks, scores, tok.decoder, figure, wrong_words=wrong, title="GASS on unseen noisy captions")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--figure", type=Path, default=None, help="write a token-score PNG of a few unseen noisy captions"
    )
    args = parser.parse_args(argv)
    results = noise_detection_auroc(
        args.identities, args.steps, args.batch, args.lr, args.noise, args.seed, figure=args.figure
    )
    run = results.pop("run")
    print(
        f"tiny backbone, {args.identities} identities, {args.steps} steps x {args.batch}, trained in "
        f"{run['train_s']:.0f}s"
    )
    print("AUROC that a correct attribute word scores above a known-wrong one (0.5 = chance)")
    print(f"{'captions':<30} {'gass':>6} {'cosine':>7} {'random':>7}")
    for name, row in results.items():
        print(f"{name:<30} {row['gass']:>6.3f} {row['cosine']:>7.3f} {row['random']:>7.3f}")


if __name__ == "__main__":
    main()
