"""Time training steps: plain SDM, IRRA-style, GA-DMS, and the share of GASS.

    python -m gadms.bench.step [--backbone ViT-B-16] [--batch 8] [--repeats 3]

Each step is forward + backward + an Adam update on random images and real
tokenised captions. Prints a table; GA-DMS is timed with GASS gradients from
one backward pass (ours) and from one backward per layer (as the paper's
released code does), to show what the single pass saves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gadms.config import LossConfig, ModelConfig
from gadms.model.backbone import BACKBONES, tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep

CAPTIONS = (
    "A woman in a beige puffer coat holding a camera, with black trousers and white sneakers.",
    "The man wears a red striped t-shirt, blue jeans and brown shoes. He carries a black backpack.",
    "A young lady with long blonde hair is walking. She wears a green sweater and a gray skirt.",
    "This pedestrian is a man with short black hair, in a white shirt and dark shorts.",
)


def _time_step(model, step: TrainingStep, images, tokens, optimizer, repeats: int) -> tuple[float, float, float]:
    """Median seconds per step, median seconds spent scoring tokens, mean tokens masked for MTP."""
    totals: list[float] = []
    scoring: list[float] = []
    masked: list[int] = []
    for i in range(repeats + 1):  # the first run warms up
        optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        out = step(model, images, tokens)
        out.total.backward()
        optimizer.step()
        elapsed = time.perf_counter() - started
        if i:
            totals.append(elapsed)
            scoring.append(out.timings["scoring_s"])
            masked.append(0 if out.informative_mask is None else int(out.informative_mask.sum()))
    return statistics.median(totals), statistics.median(scoring), statistics.mean(masked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16", choices=list(BACKBONES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    h, w = BACKBONES[args.backbone].image_size
    model_cfg = ModelConfig(backbone=args.backbone, image_height=h, image_width=w)
    model = PersonRetrievalModel(Architecture.from_config(model_cfg)).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-3)
    tokens = tokenizer(77)([CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)]).to(args.device)
    images = torch.randn(args.batch, 3, h, w, device=args.device)
    loss_cfg = LossConfig()

    rows = []
    for label, mode, one_pass in (
        ("plain SDM", "sdm", True),
        ("IRRA-style (SDM + MLM 15%)", "irra", True),
        ("GA-DMS, GASS one backward", "gadms", True),
        ("GA-DMS, GASS L backwards", "gadms", False),
    ):
        step = TrainingStep(model_cfg, loss_cfg, mode=mode)  # type: ignore[arg-type]
        step.gass_one_pass = one_pass
        seconds, scoring, masked = _time_step(model, step, images, tokens, optimizer, args.repeats)
        rows.append((label, seconds, scoring, masked))

    irra = rows[1][1]
    print(
        f"{args.backbone} at {h}x{w}, batch {args.batch}, {args.device}, {torch.get_num_threads()} threads, median "
        f"of {args.repeats}"
    )
    print(f"{'step':<30} {'s/step':>8} {'vs IRRA':>8} {'GASS s':>8} {'GASS share':>10} {'MTP tokens':>10}")
    for label, seconds, scoring, masked in rows:
        share = f"{100 * scoring / seconds:.1f}%" if scoring else "-"
        gass = f"{scoring:.3f}" if scoring else "-"
        print(f"{label:<30} {seconds:>8.3f} {seconds / irra:>7.2f}x {gass:>8} {share:>10} {masked:>10.1f}")


if __name__ == "__main__":
    main()
