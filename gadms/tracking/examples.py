"""Evaluation that also returns what a person wants to look at: each example query's top-k.

Same numbers as :func:`gadms.eval.evaluate.evaluate_split` (text-to-image:
the same encoders and metric function), but the gallery is encoded once for
both the metrics and the examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gadms.data.benchmarks import SplitData
from gadms.data.pipeline import ImageSource
from gadms.eval.evaluate import encode_images, encode_texts
from gadms.eval.metrics import retrieval_metrics_from_features
from gadms.model.retrieval import PersonRetrievalModel

TOP_K = 10


@dataclass(frozen=True)
class RetrievalExample:
    """One query and the gallery it ranked highest.

    Attributes:
        query_index: index of the caption in the split's queries.
        query: the caption.
        images: the top-k gallery images, best first.
        gallery_indices: their indices in the split's gallery.
        correct: for each, whether it has the query's identity.
    """

    query_index: int
    query: str
    images: list[ImageSource]
    gallery_indices: list[int]
    correct: list[bool]


@dataclass(frozen=True)
class SplitEvaluation:
    """Metrics of a split (percent) and a few ranked example queries."""

    metrics: dict[str, float]
    examples: list[RetrievalExample]


def example_query_indices(num_queries: int, count: int) -> list[int]:
    """``count`` query indices spread evenly over the split (so over identities), first and last included.

    Args:
        num_queries: queries in the split.
        count: how many examples are wanted.

    Returns:
        Distinct indices in ascending order (fewer when the split is smaller).
    """
    if num_queries <= 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, num_queries - 1, min(count, num_queries)).round()})


def top_k_examples(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    split: SplitData,
    indices: Sequence[int],
    k: int = TOP_K,
) -> list[RetrievalExample]:
    """The top-k gallery images by cosine similarity for each chosen query.

    Args:
        query_features: ``(Q, E)`` L2-normalised caption embeddings of the split, in query order.
        gallery_features: ``(G, E)`` L2-normalised image embeddings, in gallery order.
        split: the :class:`gadms.data.benchmarks.SplitData` the features came from.
        indices: which queries to rank.
        k: images per query (at most the gallery size).

    Returns:
        One :class:`RetrievalExample` per index.
    """
    images, image_ids = split.gallery()
    captions, caption_ids = split.queries()
    if not indices:
        return []
    similarity = query_features[list(indices)].float() @ gallery_features.float().T
    ranked = similarity.topk(min(k, len(images)), dim=1).indices.tolist()
    return [
        RetrievalExample(q, captions[q], [images[g] for g in row], row, [image_ids[g] == caption_ids[q] for g in row])
        for q, row in zip(indices, ranked)
    ]


def evaluate_with_examples(
    model: PersonRetrievalModel,
    split: SplitData,
    examples: int = 4,
    k: int = TOP_K,
    chunk: int = 4096,
    batch: int = 128,
    device: str = "cpu",
    progress: bool = False,
) -> SplitEvaluation:
    """Text-to-image R1, R5, R10, mAP, mINP of ``split`` and the top-k of a few of its queries.

    Args:
        model: the model, on ``device``.
        split: a test split (:class:`gadms.data.benchmarks.SplitData`).
        examples: how many example queries (spread over the split, see :func:`example_query_indices`).
        k: gallery images per example.
        chunk: queries scored per block by the metric.
        batch: images encoded per batch (captions: twice as many).
        device: where to encode.
        progress: show progress bars.

    Returns:
        The metrics (percent, keys as in :data:`gadms.eval.evaluate.METRICS`) and the examples.
    """
    model.eval()
    images, image_ids = split.gallery()
    captions, caption_ids = split.queries()
    gallery = encode_images(model, images, batch, 0, device, progress)
    queries = encode_texts(model, captions, batch * 2, device, progress)
    metrics = retrieval_metrics_from_features(
        queries, gallery, torch.tensor(caption_ids), torch.tensor(image_ids), chunk=chunk
    )
    chosen = example_query_indices(len(captions), examples)
    return SplitEvaluation(metrics, top_k_examples(queries, gallery, split, chosen, k))
