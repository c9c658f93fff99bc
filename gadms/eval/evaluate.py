"""Evaluate a model on a benchmark's test split: encode gallery and queries, score, report.

Direct transfer, fine-tuned and cross-domain evaluation are the same call with
another model or benchmark.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gadms.data.pipeline import ImageDataset, ImageSource, image_transform
from gadms.eval.metrics import retrieval_metrics_from_features
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import PersonRetrievalModel
from gadms.train.threads import use_cores

METRICS = ("R1", "R5", "R10", "mAP", "mINP")


@torch.no_grad()
def encode_images(
    model: PersonRetrievalModel,
    images: Sequence[ImageSource],
    batch: int = 128,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised image embeddings ``(G, E)``, in input order."""
    arch = model.arch
    loader = DataLoader(
        ImageDataset(images, image_transform(arch.image_height, arch.image_width)),
        batch_size=batch,
        num_workers=workers,
    )
    out = [
        model.embed_images(x.to(device)).cpu()
        for x, _ in tqdm(loader, desc="gallery", unit="batch", disable=not progress, leave=False)
    ]
    return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def encode_texts(
    model: PersonRetrievalModel, captions: Sequence[str], batch: int = 256, device: str = "cpu", progress: bool = False
) -> torch.Tensor:
    """L2-normalised caption embeddings ``(Q, E)``, in input order."""
    tok = tokenizer(model.arch.context_length)
    out = []
    for start in tqdm(range(0, len(captions), batch), desc="queries", unit="batch", disable=not progress, leave=False):
        out.append(model.embed_texts(tok(list(captions[start : start + batch])).to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


def evaluate_split(
    model: PersonRetrievalModel,
    split,
    image_to_text: bool = False,
    chunk: int = 4096,
    batch: int = 128,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """R1, R5, R10, mAP, mINP (percent) of text-to-image retrieval on ``split`` (a test split).

    Args:
        model: the model, in eval mode on ``device``.
        split: a :class:`gadms.data.benchmarks.SplitData` (its gallery and queries).
        image_to_text: rank captions for each image instead.
        chunk: queries scored per block (bounds memory).
    """
    use_cores(announce=progress)  # no more threads than cores this process may use
    model.eval()
    images, image_ids = split.gallery()
    captions, caption_ids = split.queries()
    gallery = encode_images(model, images, batch, workers, device, progress)
    queries = encode_texts(model, captions, batch * 2, device, progress)
    g_ids, q_ids = torch.tensor(image_ids), torch.tensor(caption_ids)
    if image_to_text:
        return retrieval_metrics_from_features(gallery, queries, g_ids, q_ids, chunk=chunk)
    return retrieval_metrics_from_features(queries, gallery, q_ids, g_ids, chunk=chunk)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A text table: one row per evaluation, columns R1 R5 R10 mAP mINP."""
    width = max([len("evaluation")] + [len(name) for name in rows])
    lines = [f"{'evaluation':<{width}} " + " ".join(f"{m:>7}" for m in METRICS)]
    for name, metrics in rows.items():
        lines.append(f"{name:<{width}} " + " ".join(f"{metrics[m]:>7.2f}" for m in METRICS))
    return "\n".join(lines)
