"""Top-k by cosine similarity: exact (blocked matrix products) and approximate (a FAISS inverted-file index).

Embeddings are L2-normalised, so cosine similarity is the dot product. Exact
search scores the gallery block by block (memory bounded by the block size)
and orders results by score, then by gallery position, so ties are broken
the same way on every machine. The approximate index is FAISS's IVF-Flat with
inner product: the gallery is split into ``nlist`` k-means cells and a query
scans the ``nprobe`` nearest cells. ``nprobe`` is chosen as the smallest
power of two whose recall@k against exact search reaches a target on probe
queries, and that recall is kept with the index.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BLOCK_ROWS = 65536
APPROX_FILE = "approximate.faiss"


def exact_top_k(
    gallery: np.ndarray, queries: np.ndarray, k: int, block: int = BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best gallery rows for each query by dot product.

    Args:
        gallery: ``(N, E)`` float32 (a memmap is read block by block).
        queries: ``(Q, E)`` float32.
        k: results per query (fewer when the gallery is smaller).
        block: gallery rows scored at once.

    Returns:
        ``(scores, ids)``, each ``(Q, min(k, N))``, best first; equal scores in gallery order.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(gallery))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(gallery), block):
        scores = queries @ np.asarray(gallery[start : start + block], dtype=np.float32).T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        best_scores, best_ids = _keep_best(np.hstack([best_scores, scores]), np.hstack([best_ids, ids]), k)
    return best_scores, best_ids


def _keep_best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` highest scores (ties: lower id first), sorted."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, part, 1), np.take_along_axis(ids, part, 1)
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k.

    Args:
        approx_ids: ``(Q, k)`` ids (-1 for missing results).
        exact_ids: ``(Q, k)`` ids.

    Returns:
        Recall in [0, 1].
    """
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits)) if hits else 1.0


@dataclass
class ApproximateIndex:
    """A FAISS IVF-Flat index over the first ``count`` gallery rows with its tuned ``nprobe``.

    Attributes:
        index: the ``faiss.IndexIVFFlat``.
        nprobe: cells scanned per query.
        recall: recall@``k`` against exact search on the probe queries when ``nprobe`` was chosen.
        k: the k of that recall.
        probes: number of probe queries.
    """

    index: Any
    nprobe: int
    recall: float
    k: int
    probes: int

    @property
    def count(self) -> int:
        """Gallery rows in the index."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Width of the indexed vectors."""
        return int(self.index.d)

    @property
    def nlist(self) -> int:
        """Number of k-means cells."""
        return int(self.index.nlist)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k: ``(scores, ids)`` like :func:`exact_top_k` (id -1 where a cell ran out)."""
        self.index.nprobe = int(nprobe or self.nprobe)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.count))
        return scores, ids

    def add(self, rows: np.ndarray) -> None:
        """Add gallery rows (assigned to the trained cells, no retraining)."""
        self.index.add(np.ascontiguousarray(rows, dtype=np.float32))

    def meta(self) -> dict:
        """What ``index.json`` records about this index."""
        return {
            "kind": "faiss-ivf-flat",
            "count": self.count,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            f"recall_at_{self.k}": round(self.recall, 4),
            "probe_queries": self.probes,
        }

    def save(self, directory: Path) -> Path:
        """Write the FAISS index to ``directory/approximate.faiss`` (a temporary file, then renamed)."""
        import faiss

        path = Path(directory) / APPROX_FILE
        tmp = path.with_name(f".{APPROX_FILE}.tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path, meta: dict) -> ApproximateIndex:
        """Read an index written by :meth:`save` with the settings recorded in ``meta``.

        Raises:
            SearchError: the file is not a FAISS IVF index, or ``meta`` lacks its settings (one line naming the file).
        """
        import faiss

        from gadms.search.model import SearchError

        path = Path(directory) / APPROX_FILE
        try:
            k = next(int(key.rsplit("_", 1)[1]) for key in meta if key.startswith("recall_at_"))
            settings = (int(meta["nprobe"]), float(meta[f"recall_at_{k}"]), k, int(meta["probe_queries"]))
            index = faiss.read_index(str(path))
            if not isinstance(index, faiss.IndexIVF):
                raise TypeError(f"a {type(index).__name__}, not an IVF index")
        except (RuntimeError, StopIteration, KeyError, TypeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = re.sub(r"^Error in .* at \S+:\d+: ", "", reason)  # FAISS's C++ location prefix
            raise SearchError(f"{path}: damaged approximate index ({reason[:200]})") from None
        return cls(index, *settings)


def default_nlist(count: int) -> int:
    """Cells for ``count`` rows: the power of two nearest ``sqrt(count)``, between 16 and 4096."""
    return int(min(4096, max(16, 2 ** round(math.log2(max(count, 1)) / 2))))


def train_approximate(
    gallery: np.ndarray, nlist: int | None = None, seed: int = 0, train_per_cell: int = 64
) -> ApproximateIndex:
    """Train the IVF cells on a seeded sample of the gallery and add every row.

    Args:
        gallery: ``(N, E)`` float32 unit rows.
        nlist: number of cells (default :func:`default_nlist`).
        seed: seeds the training sample and k-means.
        train_per_cell: training rows per cell (bounds the k-means cost).

    Returns:
        The index (``nprobe`` 1 until :func:`tune_nprobe`).
    """
    import faiss

    count, dim = gallery.shape
    nlist = min(nlist or default_nlist(count), count)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(count, size=min(count, nlist * train_per_cell), replace=False))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small galleries: no warning, the sample is what it is
    index.train(np.ascontiguousarray(gallery[sample], dtype=np.float32))
    for start in range(0, count, BLOCK_ROWS):
        index.add(np.ascontiguousarray(gallery[start : start + BLOCK_ROWS], dtype=np.float32))
    return ApproximateIndex(index, 1, 0.0, 10, 0)


def tune_nprobe(
    approx: ApproximateIndex, gallery: np.ndarray, probe_queries: np.ndarray, k: int = 10, target: float = 0.95
) -> ApproximateIndex:
    """Set ``approx.nprobe`` to the smallest power of two reaching ``target`` recall@k on the probe queries.

    Args:
        approx: the trained index.
        gallery: the rows it holds (for the exact reference).
        probe_queries: ``(P, E)`` queries to measure recall with.
        k: the recall's k.
        target: recall to reach (the largest ``nprobe``, all cells, is exact).

    Returns:
        ``approx``, with ``nprobe``, ``recall``, ``k`` and ``probes`` set.
    """
    _, exact_ids = exact_top_k(gallery, probe_queries, k)
    nprobe = 1
    while True:
        recall = recall_at_k(approx.search(probe_queries, k, nprobe)[1], exact_ids)
        if recall >= target or nprobe >= approx.nlist:
            break
        nprobe = min(nprobe * 2, approx.nlist)
    approx.nprobe, approx.recall, approx.k, approx.probes = nprobe, recall, k, len(probe_queries)
    return approx


def probe_queries_from(gallery: np.ndarray, count: int = 200, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Probe queries for tuning: seeded gallery rows moved off themselves by Gaussian noise, renormalised.

    Text queries do not coincide with any image, so probes are perturbed images
    (``noise`` is the noise norm relative to the unit row) rather than the rows themselves.

    Args:
        gallery: ``(N, E)`` unit rows.
        count: probes to draw.
        noise: norm of the added noise.
        seed: seeds the choice and the noise.

    Returns:
        ``(min(count, N), E)`` float32 unit rows.
    """
    rng = np.random.default_rng(seed)
    rows = np.asarray(
        gallery[np.sort(rng.choice(len(gallery), size=min(count, len(gallery)), replace=False))], dtype=np.float32
    )
    jitter = rng.standard_normal(rows.shape).astype(np.float32) * (noise / math.sqrt(rows.shape[1]))
    moved = rows + jitter
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)
