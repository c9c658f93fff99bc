"""Training and data-loading throughput.

    python -m gadms.bench.train [--backbone tiny] [--batch 32] [--steps 5] [--workers 2]

Prints samples/s of a GA-DMS and an IRRA-style training step (forward,
backward, Adam) on synthetic data, and images/s of the data loader alone
(decode, augment, tokenise) with the given number of workers, so one can see
whether loading keeps up with training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from gadms.config import AugmentConfig, LossConfig, ModelConfig, SynthConfig
from gadms.data.pipeline import EpochSampler, PairDataset, image_transform
from gadms.model.backbone import BACKBONES, tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep
from gadms.synth.benchmark import write_benchmark
from gadms.train.recipes import corpus_pairs


def _loader_rate(dataset: PairDataset, batch: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, sampler=EpochSampler(len(dataset)), num_workers=workers)
    it = iter(loader)
    next(it)  # start the workers
    started = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(it)[0])
    return count / (time.perf_counter() - started)


def _step_rate(model, step: TrainingStep, images, tokens, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    times = []
    for i in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        step(model, images, tokens).total.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - started)
    return len(images) / (sum(times) / len(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny", choices=list(BACKBONES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    h, w = BACKBONES[args.backbone].image_size
    cfg = ModelConfig(backbone=args.backbone, image_height=h, image_width=w)
    with tempfile.TemporaryDirectory() as tmp:
        write_benchmark(Path(tmp), 60, 0, SynthConfig(), progress=False)
        dataset = PairDataset(
            corpus_pairs("cuhk-pedes", Path(tmp)), image_transform(h, w, AugmentConfig()), tokenizer(77)
        )
        batches = max(4, min(20, len(dataset) // args.batch - 1))
        loader = {n: _loader_rate(dataset, args.batch, n, batches) for n in sorted({0, args.workers})}
        items = [dataset[i] for i in range(args.batch)]
    images, tokens = torch.stack([x[0] for x in items]), torch.stack([x[1] for x in items])
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(cfg))
    rates = {}
    for label, mode, loss in (
        ("GA-DMS (SDM + MTP, GASS)", "gadms", LossConfig()),
        ("IRRA-style (SDM + MLM)", "irra", LossConfig()),
    ):
        step = TrainingStep(cfg, loss, mode=mode)  # type: ignore[arg-type]
        rates[label] = _step_rate(model, step, images, tokens, args.steps)
    print(f"{args.backbone} at {h}x{w}, batch {args.batch}, {torch.get_num_threads()} threads")
    for label, rate in rates.items():
        print(f"  train step {label:<28} {rate:8.1f} samples/s")
    for workers, rate in loader.items():
        print(f"  data loader only, {workers} worker(s){'':<12} {rate:8.1f} images/s")


if __name__ == "__main__":
    main()
