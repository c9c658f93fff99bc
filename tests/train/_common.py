"""Shared by the training tests and the DDP worker: a tiny, deterministic training run."""

import json
import sys
from pathlib import Path

import torch

from gadms.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig, StreamConfig, SynthConfig
from gadms.data.pipeline import Pair, PairDataset, image_transform
from gadms.data.shardplan import curated_index
from gadms.data.streaming import StreamingPairs
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.synth.benchmark import write_benchmark
from gadms.train.loop import Trainer
from gadms.train.settings import RunSettings

MODEL = ModelConfig(context_length=32)


def pairs(workdir: Path) -> list[Pair]:
    root = workdir / "bench" / "CUHK-PEDES"
    if not (root / "reid_raw.json").exists():
        write_benchmark(workdir / "bench", 6, 0, SynthConfig(), progress=False)
    records = [r for r in json.loads((root / "reid_raw.json").read_text()) if r["split"] == "train"]
    return [Pair(root / "imgs" / r["file_path"], c, i) for i, r in enumerate(records) for c in r["captions"]]


def run_training(
    out: Path,
    world_batch: int,
    epochs: int,
    mode: str = "gadms",
    resume: bool = False,
    stop_after=None,
    workers: int = 0,
):
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(MODEL))
    dataset = PairDataset(pairs(out.parent), image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    settings = RunSettings(
        mode=mode,
        epochs=epochs,
        batch_size=world_batch,
        optimizer=OptimizerConfig(lr=1e-4, eps=1e-3),
        warmup_epochs=1,
        grad_clip=5.0,
        num_workers=workers,
    )
    # the paper's losses and Adam eps (a large eps keeps near-zero gradients from flipping updates)
    trainer = Trainer(
        model, dataset, settings, MODEL, LossConfig(itc={"enabled": False}), out, device="cpu", progress=False
    )
    trainer.fit(resume=resume, stop_after=stop_after)
    return model


def stream_corpus(workdir: Path) -> Path:
    """A small curated corpus on disk (4 uneven shards, 46 pairs)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from _stream_corpus import write_corpus

    root = workdir / "curated"
    if not (root / "meta").is_dir():
        write_corpus(root, [5, 9, 3, 6])
    return root


def run_streaming(
    out: Path,
    epochs: int,
    resume: bool = False,
    stop_after_steps=None,
    workers: int = 2,
    every: int = 2,
    world_batch: int = 8,
    model_cfg: ModelConfig = MODEL,
    loss_cfg: LossConfig | None = None,
    partners: bool = False,
):
    """Training of the tiny model on the streamed corpus (SDM by default), checkpointing every ``every`` steps."""
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(model_cfg))
    stream = StreamingPairs(
        curated_index(stream_corpus(out.parent)),
        image_transform(128, 64, AugmentConfig()),
        tokenizer(32),
        seed=0,
        config=StreamConfig(slots=2, buffer_pairs=12),
        partners=partners,
    )
    settings = RunSettings(
        mode="sdm" if loss_cfg is None else "gadms",
        epochs=epochs,
        batch_size=world_batch,
        optimizer=OptimizerConfig(lr=1e-4, eps=1e-3),
        warmup_epochs=1,
        grad_clip=5.0,
        num_workers=workers,
        checkpoint_every_steps=every,
    )
    loss = loss_cfg or LossConfig(itc={"enabled": False})
    trainer = Trainer(model, stream, settings, model_cfg, loss, out, device="cpu", progress=False)
    trainer.fit(resume=resume, stop_after_steps=stop_after_steps)
    return model, trainer
