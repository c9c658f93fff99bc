"""Template embeddings (the CLIP text tower) and their k-means clusters (SPEC 3.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from gadms.config import TemplatesConfig
from gadms.curation.templates.kmeans import kmeans_labels, quantise, squared_distances

EMBED_GRID = float(1 << 16)  # template embeddings are rounded to multiples of 1/EMBED_GRID


@dataclass(frozen=True)
class TemplateCluster:
    """One k-means cluster of templates.

    Attributes:
        index: position of the cluster in the output (by first member in input order).
        representative: the member closest (cosine) to the centroid.
        members: the random other members kept, in input order.
        size: number of distinct templates in the cluster.
    """

    index: int
    representative: str
    members: tuple[str, ...]
    size: int


def unique_in_order(texts: Iterable[str]) -> list[str]:
    """Drop repeats.

    Args:
        texts: any strings.

    Returns:
        The distinct strings, first occurrences in order.
    """
    return list(dict.fromkeys(texts))


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def cluster_templates(
    templates: list[str], embeddings: np.ndarray, k: int, random_members: int, seed: int
) -> list[TemplateCluster]:
    """K-means the distinct templates; per cluster keep the centroid's nearest plus random members (SPEC 3.2).

    Args:
        templates: templates, repeats allowed (removed first, first occurrence kept).
        embeddings: one row per entry of ``templates``.
        k: number of clusters (at most the number of distinct templates).
        random_members: random other members kept per cluster (fewer if it is small).
        seed: seeds k-means and the random choice.

    Returns:
        The non-empty clusters, ordered by their earliest member in ``templates``.
    """
    if len(templates) != len(embeddings):
        raise ValueError(f"cluster_templates: {len(templates)} templates but {len(embeddings)} embedding rows")
    if k < 1 or random_members < 0:
        raise ValueError(f"cluster_templates: k must be >= 1 and random_members >= 0 (got {k}, {random_members})")
    first = {text: row for row, text in reversed(list(enumerate(templates)))}
    unique = unique_in_order(templates)
    if not unique:
        return []
    vectors = _normalise(np.asarray(embeddings, dtype=np.float64)[[first[t] for t in unique]])
    labels = kmeans_labels(vectors, min(k, len(unique)), seed)
    rng = np.random.default_rng(seed)
    order = sorted(set(labels.tolist()), key=lambda label: int(np.flatnonzero(labels == label)[0]))
    return [
        _cluster(index, np.flatnonzero(labels == label), unique, vectors, random_members, rng)
        for index, label in enumerate(order)
    ]


def _cluster(
    index: int, rows: np.ndarray, unique: list[str], vectors: np.ndarray, random_members: int, rng: np.random.Generator
) -> TemplateCluster:
    """Build one cluster from its member rows (the representative: nearest the centroid, exact on any CPU)."""
    members = quantise(vectors[rows])
    sums = members.sum(axis=0, keepdims=True)
    distances = squared_distances(members, sums, np.array([len(rows)], dtype=np.int64))[:, 0]
    best = int(rows[int(np.argmin(distances))])
    others = [int(r) for r in rows if r != best]
    picked = sorted(rng.choice(others, size=min(random_members, len(others)), replace=False).tolist()) if others else []
    return TemplateCluster(index, unique[best], tuple(unique[r] for r in picked), len(rows))


def _text_embedder(cfg: TemplatesConfig, seed: int) -> Any:
    """The CLIP model whose text tower embeds templates (seeded random init unless weights are given)."""
    import torch

    from gadms.model.backbone import build_clip, load_pretrained

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_clip(cfg.embedder)
    if cfg.embedder_pretrained is not None:
        load_pretrained(model, cfg.embedder_pretrained)
    return model.eval()


def embed_templates(texts: Sequence[str], cfg: TemplatesConfig, seed: int, batch_size: int = 64) -> np.ndarray:
    """L2-normalised CLIP text embeddings of ``texts`` (deterministic for a seed, on any CPU).

    The text tower runs in float64 and the rows are rounded to a ``2**-16`` grid, so
    the last-bit differences between CPUs' float kernels do not reach the result.

    Args:
        texts: templates or captions.
        cfg: ``embedder`` (tiny | ViT-B-16) and ``embedder_pretrained`` (local weights, or None for a
            seeded random init).
        seed: the random-init seed.
        batch_size: texts encoded at once.

    Returns:
        float32 array ``(len(texts), embed_dim)`` with unit rows.
    """
    import torch

    from gadms.model.backbone import tokenizer

    model = _text_embedder(cfg, seed).double()
    tokenize_batch = tokenizer()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenize_batch(list(texts[start : start + batch_size]))
            rows.append(model.encode_text(tokens, normalize=True).numpy())
    if not rows:
        return np.zeros((0, model.text_projection.shape[1]), dtype=np.float32)
    return (np.rint(np.concatenate(rows) * EMBED_GRID) / EMBED_GRID).astype(np.float32)
