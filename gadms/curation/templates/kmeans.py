"""K-means that gives the same clustering on any CPU.

Float32 (and even float64 BLAS) results differ in their last bits between CPUs
(AVX2 vs AVX-512 kernels, thread counts), and k-means turns such differences into
another clustering when two distances nearly tie. Here the rows are first rounded
to a fixed grid (``2**-GRID_BITS``) and held as integers; every sum and dot product
is then exact integer arithmetic, the only float operations are single, correctly
rounded divisions, and ties are broken by the lowest index. The result depends on
the inputs and the seed only.
"""

from __future__ import annotations

import math

import numpy as np

GRID_BITS = 10  # rows are rounded to multiples of 2**-10 before clustering
MAX_ITER = 300


def quantise(rows: np.ndarray) -> np.ndarray:
    """Rows rounded to the ``2**-GRID_BITS`` grid, as exact int64 multiples of it.

    Args:
        rows: float array ``(n, d)``, typically unit rows.

    Returns:
        int64 array ``(n, d)``.
    """
    return np.rint(np.asarray(rows, dtype=np.float64) * (1 << GRID_BITS)).astype(np.int64)


def squared_distances(points: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Squared distances of integer ``points`` to the centroids ``sums / counts``.

    ``|q - S/n|^2 = |q|^2 - 2 q.S / n + |S|^2 / n^2``; each dot product is an exact
    integer, so the result is the same on every machine.

    Args:
        points: int64 ``(n, d)``.
        sums: int64 ``(k, d)``, the sum of each centroid's members.
        counts: int64 ``(k,)``, each centroid's member count (>= 1).

    Returns:
        float64 ``(n, k)``.
    """
    point_norms = np.einsum("nd,nd->n", points, points).astype(np.float64)
    cross = (points @ sums.T).astype(np.float64)
    sum_norms = np.einsum("kd,kd->k", sums, sums).astype(np.float64)
    n = counts.astype(np.float64)
    return point_norms[:, None] - 2.0 * cross / n[None, :] + sum_norms[None, :] / (n * n)[None, :]


def _plus_plus_init(points: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Row indices of k-means++ seeds (distance-squared weighted sampling)."""
    chosen = [int(rng.integers(len(points)))]
    ones = np.ones(1, dtype=np.int64)
    nearest = squared_distances(points, points[chosen], ones)[:, 0]
    for _ in range(1, k):
        weights = np.maximum(nearest, 0.0)
        total = math.fsum(weights.tolist())
        if total <= 0.0:  # every point sits on a seed: take the first unused row
            pick = next(i for i in range(len(points)) if i not in chosen)
        else:
            pick = int(np.searchsorted(np.cumsum(weights), rng.random() * total, side="right"))
            pick = min(pick, len(points) - 1)
        chosen.append(pick)
        nearest = np.minimum(nearest, squared_distances(points, points[[pick]], ones)[:, 0])
    return chosen


def _centroid_sums(points: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster integer sums and member counts."""
    sums = np.zeros((k, points.shape[1]), dtype=np.int64)
    np.add.at(sums, labels, points)
    return sums, np.bincount(labels, minlength=k).astype(np.int64)


def _refill_empty(points: np.ndarray, labels: np.ndarray, distances: np.ndarray, k: int) -> np.ndarray:
    """Give each empty cluster the point farthest from its centroid (lowest index on ties)."""
    labels = labels.copy()
    own = distances[np.arange(len(points)), labels]
    for cluster in range(k):
        if np.any(labels == cluster):
            continue
        counts = np.bincount(labels, minlength=k)
        movable = np.flatnonzero(counts[labels] > 1)
        far = int(movable[np.argmax(own[movable])])
        labels[far] = cluster
        own[far] = -1.0
    return labels


def _lloyd(points: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, float]:
    """Lloyd iterations from the seed rows; returns labels and the inertia."""
    k = len(seeds)
    sums, counts = points[seeds].copy(), np.ones(k, dtype=np.int64)
    labels = np.full(len(points), -1, dtype=np.int64)
    for _ in range(MAX_ITER):
        distances = squared_distances(points, sums, counts)
        new = _refill_empty(points, np.argmin(distances, axis=1), distances, k)
        if np.array_equal(new, labels):
            break
        labels = new
        sums, counts = _centroid_sums(points, labels, k)
    distances = squared_distances(points, sums, counts)
    inertia = math.fsum(distances[np.arange(len(points)), labels].tolist())
    return labels, inertia


def kmeans_labels(rows: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    """Cluster labels of ``rows`` (k-means++ seeding, best of ``n_init`` runs).

    Args:
        rows: float array ``(n, d)`` (unit rows: the grid is sized for them).
        k: clusters, 1 <= k <= n.
        seed: seeds the k-means++ sampling.
        n_init: restarts; the lowest inertia wins, the earliest on a tie.

    Returns:
        int64 labels ``(n,)`` in ``0..k-1``.
    """
    points = quantise(rows)
    if not 1 <= k <= len(points):
        raise ValueError(f"kmeans: k must be in 1..{len(points)} (got {k})")
    if k == len(points):
        return np.arange(k, dtype=np.int64)
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = None, math.inf
    for _ in range(n_init):
        labels, inertia = _lloyd(points, _plus_plus_init(points, k, rng))
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    assert best_labels is not None
    return best_labels
