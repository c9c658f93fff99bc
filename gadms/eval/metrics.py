"""Text-to-image retrieval metrics (SPEC section 6): Rank-k, mAP and mINP.

Each query ranks the gallery by descending similarity. The metrics need only
the ranks of the query's positives (gallery items of its identity), and the
i-th best positive ranks i + (the negatives scoring at least as high). So
instead of sorting every row we count: one comparison per (positive, gallery
item) pair, in blocks small enough to stay in cache. Queries go in order of
how many positives they have, so a block pads few of them. A query whose
identity has many images (more than ``_SORT_ABOVE``) is cheaper to rank by
sorting its row, and is.

Ties are broken against the query: a positive ranks below every negative with
the same similarity (tied positives take consecutive ranks). A model cannot
gain from ties (a constant similarity scores the worst case, not a score that
depends on how the gallery happens to be ordered), and the rule needs only a
``>=`` count. With continuous similarities exact ties are rare and the rule
hardly matters.

Queries with no positive in the gallery are left out of every metric. A
query's similarities to its positives must be finite (checked); NaN elsewhere
gives undefined ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Comparisons per block: 1 MB of booleans stays in a CPU's L2; a GPU wants larger launches.
_BUDGET = {"cpu": 1 << 20}
_GPU_BUDGET = 1 << 24
# Similarities copied out of a given matrix at a time: 16 MB of float32.
_COPY_BUDGET = 1 << 22
# Above this many positives, sorting the row beats counting per positive (on CPU, about 150-300).
_SORT_ABOVE = 128
_NO_POSITIVE = "no query has a gallery item of its identity, so retrieval metrics are undefined"


def retrieval_metrics(
    similarity: torch.Tensor | np.ndarray,
    query_ids: torch.Tensor | np.ndarray,
    gallery_ids: torch.Tensor | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
) -> dict[str, float]:
    """Rank-k, mAP and mINP of a query-by-gallery similarity matrix.

    Args:
        similarity: (num_queries, num_gallery), higher is more similar; float16,
            bfloat16, float32 or float64, on any device (work happens there).
        query_ids: (num_queries,) identity of each query.
        gallery_ids: (num_gallery,) identity of each gallery item.
        ks: the k of each Rank-k.
        chunk: most query rows handled at once; extra memory stays about 20 MB whatever the matrix size.

    Returns:
        ``{"R1": ..., "R5": ..., "R10": ..., "mAP": ..., "mINP": ...}`` in percent,
        over the queries that have at least one positive.

    Raises:
        ValueError: on mismatched shapes, or when no query has a positive.
    """
    _check_options(ks, chunk)
    similarity = torch.as_tensor(similarity).detach()
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (num_queries, num_gallery), got shape {tuple(similarity.shape)}")
    positives = _positives(query_ids, gallery_ids, (similarity.shape[0], similarity.shape[1]), similarity.device)
    step = max(1, min(chunk, _COPY_BUDGET // max(1, similarity.shape[1])))

    def chunks() -> Iterator[tuple[int, torch.Tensor]]:  # copies: ranking overwrites positives
        for start in range(0, len(positives.order), step):
            yield start, _exact_float(similarity.index_select(0, positives.order[start : start + step]))

    return _metrics(chunks(), positives, ks)


def retrieval_metrics_from_features(
    query_features: torch.Tensor | np.ndarray,
    gallery_features: torch.Tensor | np.ndarray,
    query_ids: torch.Tensor | np.ndarray,
    gallery_ids: torch.Tensor | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
) -> dict[str, float]:
    """Rank-k, mAP and mINP by cosine similarity, never holding the whole similarity matrix.

    Features are L2-normalised here; the similarity of ``chunk`` queries at a
    time is one float32 matrix product with the gallery, then ranked as in
    :func:`retrieval_metrics`.

    Args:
        query_features: (num_queries, dim), on the device to compute on.
        gallery_features: (num_gallery, dim).
        query_ids: (num_queries,) identity of each query.
        gallery_ids: (num_gallery,) identity of each gallery item.
        ks: the k of each Rank-k.
        chunk: queries per matrix product; memory is ``chunk * num_gallery`` floats.

    Returns:
        ``{"R1": ..., "R5": ..., "R10": ..., "mAP": ..., "mINP": ...}`` in percent.

    Raises:
        ValueError: on mismatched shapes, or when no query has a positive.
    """
    _check_options(ks, chunk)
    queries, gallery = torch.as_tensor(query_features).detach(), torch.as_tensor(gallery_features).detach()
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"features must be (num, dim) with one dim, got {tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    gallery = F.normalize(gallery.to(queries.device, torch.float32), dim=1)
    positives = _positives(query_ids, gallery_ids, (len(queries), len(gallery)), queries.device)

    def chunks() -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, len(positives.order), chunk):
            rows = queries.index_select(0, positives.order[start : start + chunk]).float()
            yield start, F.normalize(rows, dim=1) @ gallery.T

    return _metrics(chunks(), positives, ks)


def _check_options(ks: Sequence[int], chunk: int) -> None:
    """Raise ValueError unless every k and the chunk are at least 1."""
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be ranks >= 1, got {tuple(ks)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 query, got {chunk}")


def auroc(negatives: list[float], positives: list[float]) -> float:
    """The area under the ROC curve: P(positive > negative), ties counted half (Mann-Whitney U / (n_pos * n_neg)).

    Args:
        negatives: scores of the negatives.
        positives: scores of the positives.

    Returns:
        A value in [0, 1]; 0.5 is chance.
    """
    neg, pos = np.asarray(negatives), np.asarray(positives)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@dataclass(frozen=True)
class _Positives:
    """Where the positives of each kept query are, queries ordered by positive count, most first."""

    order: torch.Tensor  # (n,) query indices
    counts: torch.Tensor  # (n,) positives of each, descending
    starts: torch.Tensor  # (n,) where each query's identity begins in gallery_by_id
    gallery_by_id: torch.Tensor  # (num_gallery,) gallery indices grouped by identity, ascending within

    def of(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gallery indices (b, P) of the positives of queries lo..hi in this order, and which are real (b, P)."""
        counts = self.counts[lo:hi]
        offsets = torch.arange(int(counts[0]), device=counts.device)
        slots = (self.starts[lo:hi, None] + offsets).clamp(max=len(self.gallery_by_id) - 1)
        return self.gallery_by_id[slots], offsets < counts[:, None]


def _positives(query_ids, gallery_ids, shape: tuple[int, int], device: torch.device) -> _Positives:
    """Index every query's positives without a query-by-gallery match matrix."""
    query_ids, gallery_ids = torch.as_tensor(query_ids, device=device), torch.as_tensor(gallery_ids, device=device)
    if query_ids.shape != shape[:1] or gallery_ids.shape != shape[1:]:
        raise ValueError(
            f"ids of shapes {tuple(query_ids.shape)} and {tuple(gallery_ids.shape)} do not match a {shape[0]} x "
            f"{shape[1]} ranking"
        )
    id_type = torch.promote_types(query_ids.dtype, gallery_ids.dtype)
    query_ids, gallery_ids = query_ids.to(id_type), gallery_ids.to(id_type)
    gallery_by_id = torch.argsort(gallery_ids, stable=True)
    identities, sizes = torch.unique_consecutive(gallery_ids[gallery_by_id], return_counts=True)
    if len(identities) == 0:
        raise ValueError(_NO_POSITIVE)
    slot = torch.searchsorted(identities, query_ids).clamp(max=len(identities) - 1)
    found = identities[slot] == query_ids
    counts = torch.where(found, sizes[slot], 0)
    kept = int(found.sum())
    if kept == 0:
        raise ValueError(_NO_POSITIVE)
    order = torch.argsort(counts, descending=True, stable=True)[:kept]
    starts = (torch.cumsum(sizes, 0) - sizes)[slot[order]]
    return _Positives(order, counts[order], starts, gallery_by_id)


def _metrics(chunks: Iterator[tuple[int, torch.Tensor]], positives: _Positives, ks: Sequence[int]) -> dict[str, float]:
    """Sum per-query hits, AP and INP over chunks of similarity rows; average in percent."""
    totals = torch.zeros(len(ks) + 2, dtype=torch.float64, device=positives.counts.device)
    counts = positives.counts.tolist()
    for start, rows in chunks:
        stop = start + len(rows)
        ranks = _positive_ranks(rows, *positives.of(start, stop), counts[start:stop])
        totals += _metric_sums(ranks, positives.counts[start:stop], ks)
        del rows  # before the next chunk is made, so only one is alive
    values = (100 * totals / len(counts)).tolist()
    return {**{f"R{k}": v for k, v in zip(ks, values)}, "mAP": values[-2], "mINP": values[-1]}


def _positive_ranks(rows: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """1-based ranks (n, P) of each row's positives, ascending; entries past a row's count are padding.

    The i-th best positive ranks i + (negatives scoring at least as high), which
    is the tie rule. Overwrites the positives in ``rows``.
    """
    positive = torch.where(valid, positive, positive[:, :1])  # padding repeats a real positive
    scores = rows.gather(1, positive)
    if (valid & ~torch.isfinite(scores)).any():
        raise ValueError("similarity of a query to one of its positives is not finite")
    rows.scatter_(1, positive, -torch.inf)  # only negatives are left to count
    scores = scores.masked_fill(~valid, -torch.inf).sort(dim=1, descending=True).values
    return _count_at_or_above(rows, scores, counts) + torch.arange(1, scores.shape[1] + 1, device=rows.device)


def _metric_sums(ranks: torch.Tensor, counts: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Hits at each k, AP and INP from ascending positive ranks, each summed over the queries (float64)."""
    ranks = ranks.double()
    nth = torch.arange(1, ranks.shape[1] + 1, device=ranks.device)
    average_precision = (nth / ranks).masked_fill(nth > counts[:, None], 0).sum(1) / counts
    inverse_negative_penalty = counts / ranks.gather(1, counts[:, None] - 1).squeeze(1)
    hits = [(ranks[:, 0] <= k).sum() for k in ks]
    return torch.stack([*hits, average_precision.sum(), inverse_negative_penalty.sum()])


def _count_at_or_above(rows: torch.Tensor, thresholds: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """How many of each row's values are >= each of its thresholds (n, P); row i uses its first counts[i].

    Rows come in blocks of similar positive counts (descending), each compared
    in one go within the element budget, or sorted when counts are large.
    """
    at_or_above = torch.zeros(thresholds.shape, dtype=torch.int64, device=rows.device)
    count_block = _count_block_numpy if rows.device.type == "cpu" else _count_block_torch
    num_gallery, budget, lo = rows.shape[1], _budget(rows.device), 0
    while lo < len(counts):
        p = counts[lo]
        hi = min(len(counts), lo + max(1, budget // (num_gallery * (1 if p > _SORT_ABOVE else p))))
        block, limits = rows[lo:hi], thresholds[lo:hi, :p]
        if p > _SORT_ABOVE:
            ascending = torch.sort(block, dim=1).values
            at_or_above[lo:hi, :p] = num_gallery - torch.searchsorted(ascending, limits.contiguous(), side="left")
        else:
            at_or_above[lo:hi, :p] = count_block(block, limits)
        lo = hi
    return at_or_above


def _count_block_torch(block: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """(b, P) counts of each row's values >= each of its limits, on the block's device."""
    return torch.sum(block[:, None, :] >= limits[:, :, None], dim=-1)


def _count_block_numpy(block: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """As :func:`_count_block_torch`, for CPU: a popcount of packed comparison bits.

    numpy on one thread: 2-4x faster here than torch's sum or numpy's
    count_nonzero, and not slowed down when the other cores are busy.
    """
    flags = block.numpy()[:, None, :] >= limits.numpy()[:, :, None]
    return torch.from_numpy(np.bitwise_count(np.packbits(flags, axis=-1)).sum(axis=-1, dtype=np.int64))


def _exact_float(rows: torch.Tensor) -> torch.Tensor:
    """Rows as float32 (float64 kept): exact for half types, so no ties are made or broken."""
    return rows if rows.dtype in (torch.float32, torch.float64) else rows.float()


def _budget(device: torch.device) -> int:
    """Comparisons per block on this kind of device."""
    return _BUDGET.get(device.type, _GPU_BUDGET)
