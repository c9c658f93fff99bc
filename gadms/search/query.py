"""Answer text queries over an index: encode the queries with the index's model, rank, describe the results.

``mode`` picks the ranking: ``exact`` scores every row; ``approximate``
uses the index's FAISS index (an error when it has none); ``auto`` uses the
approximate index when there is one, else exact. With ``check_recall`` an
approximate search is also run exactly and its recall@k on these very queries
is reported next to the recall measured when the index was built.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from gadms.search.index import SearchIndex
from gadms.search.model import SearchError, SearchModel, TextSearcher
from gadms.search.ranking import exact_top_k, recall_at_k

MODES = ("auto", "exact", "approximate")
FEW_QUERIES = 16


@dataclass(frozen=True)
class Hit:
    """One ranked gallery item."""

    rank: int
    score: float
    row: int
    source: str


@dataclass(frozen=True)
class QueryResult:
    """The ranked items of one query."""

    query: str
    hits: list[Hit]

    def to_json(self, model_label: str, method: str = "exact", recall: float | None = None) -> dict:
        """``{"query", "model", "method"[, "recall"], "results": [{"rank", "score", "source"}, ...]}``.

        Args:
            model_label: the index's model.
            method: ``exact`` or ``approximate``.
            recall: for approximate search, the recall@10 against exact search measured when the index was built.
        """
        results = [{"rank": h.rank, "score": round(h.score, 6), "source": h.source} for h in self.hits]
        out: dict = {"query": self.query, "model": model_label, "method": method}
        if recall is not None:
            out["recall"] = round(recall, 4)
        return out | {"results": results}


@dataclass(frozen=True)
class SearchRun:
    """Results of a batch of queries and how they were ranked.

    Attributes:
        results: one per query, in input order.
        method: ``exact`` or ``approximate (faiss-ivf-flat, nprobe P of L cells)``.
        recall: recall@k against exact on these queries (only with ``check_recall``).
        seconds: time to rank (text encoding excluded).
        build_recall: for approximate ranking, the index's recall@10 measured when it was built.
    """

    results: list[QueryResult]
    method: str
    recall: float | None
    seconds: float
    build_recall: float | None = None

    @property
    def kind(self) -> str:
        """``exact`` or ``approximate``."""
        return "exact" if self.method == "exact" else "approximate"

    def to_json(self, model_label: str) -> list[dict]:
        """One :meth:`QueryResult.to_json` object per query, with this run's method."""
        return [r.to_json(model_label, self.kind, self.build_recall) for r in self.results]


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    """CLIP's tokenizer, built once (building it reads the BPE vocabulary: tens of milliseconds)."""
    from gadms.search.text_encoder import query_tokenizer

    return query_tokenizer(context_length)


@torch.no_grad()
def embed_queries(searcher: SearchModel | TextSearcher, queries: list[str], batch: int = 256) -> np.ndarray:
    """``(Q, E)`` float32 unit embeddings of the query texts (as :func:`gadms.eval.evaluate.encode_texts`)."""
    tok = _tokenizer(searcher.model.arch.context_length)
    with _few_threads(len(queries)):
        out = [
            searcher.model.embed_texts(tok(queries[s : s + batch]).to(searcher.device)).float().cpu().numpy()
            for s in range(0, len(queries), batch)
        ]
    return np.concatenate(out).astype(np.float32)


@contextmanager
def _few_threads(count: int) -> Iterator[None]:
    """One intra-op thread for a few queries: a text tower's small operations gain nothing from more, and on a
    busy machine each costs a thread hand-off (tens of ms each, a second per query); the same numbers either way.
    """
    saved = torch.get_num_threads()
    if count <= FEW_QUERIES:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def run_queries(
    index: SearchIndex,
    searcher: SearchModel | TextSearcher,
    queries: list[str],
    k: int = 10,
    mode: str = "auto",
    check_recall: bool = False,
) -> SearchRun:
    """Rank the index for each query.

    Args:
        index: the opened index (its model is checked by the caller, see :func:`gadms.search.index.check_model`).
        searcher: the index's model.
        queries: texts, at least one, none empty.
        k: results per query.
        mode: one of :data:`MODES`.
        check_recall: with approximate ranking, also rank exactly and report recall@k.

    Returns:
        The results.
    """
    if mode not in MODES:
        raise SearchError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if not queries or any(not q.strip() for q in queries):
        raise SearchError("queries: give at least one non-empty query text")
    if k < 1:
        raise SearchError(f"--top-k {k}: must be at least 1")
    vectors = embed_queries(searcher, queries)
    return rank_vectors(index, vectors, queries, k, mode, check_recall)


def rank_vectors(
    index: SearchIndex, vectors: np.ndarray, queries: list[str], k: int, mode: str = "auto", check_recall: bool = False
) -> SearchRun:
    """:func:`run_queries` for embeddings already computed (``vectors`` row i is ``queries[i]``)."""
    approximate = mode == "approximate" or (mode == "auto" and index.approximate is not None)
    if approximate and index.approximate is None:
        raise SearchError(
            f"{index.directory}: no approximate index (it has {len(index)} rows; build with a lower --approx-threshold)"
        )
    if vectors.shape[1] != index.embeddings.shape[1]:
        raise SearchError(
            f"{index.directory}: the index holds {index.embeddings.shape[1]}-dimensional embeddings, the queries are "
            f"{vectors.shape[1]}-dimensional; search it with its own model or build a new index"
        )
    started = time.perf_counter()
    a, build_recall = index.approximate if approximate else None, None
    if a is not None:
        scores, ids = a.search(vectors, k)
        method = f"approximate (faiss IVF-Flat, {a.nprobe} of {a.nlist} cells, build-time recall@{a.k} {a.recall:.3f})"
        build_recall = a.recall
    else:
        scores, ids = exact_top_k(index.embeddings, vectors, k)
        method = "exact"
    seconds = time.perf_counter() - started
    recall = None
    if approximate and check_recall:
        recall = recall_at_k(ids, exact_top_k(index.embeddings, vectors, k)[1])
    results = [_result(index, q, s, i) for q, s, i in zip(queries, scores, ids)]
    return SearchRun(results, method, recall, seconds, build_recall)


def _result(index: SearchIndex, query: str, scores: np.ndarray, ids: np.ndarray) -> QueryResult:
    """Hits of one query (FAISS pads with id -1 when it found fewer than k)."""
    hits = [
        Hit(rank, float(s), int(i), index.records[int(i)]["source"])
        for rank, (s, i) in enumerate(zip(scores, ids), start=1)
        if i >= 0
    ]
    return QueryResult(query, hits)


def format_results(run: SearchRun, model_label: str, count: int) -> str:
    """A text table per query: rank, score, source."""
    lines = [f"model {model_label}, {run.method} search over {count} images"]
    if run.recall is not None:
        lines.append(f"recall@k of this approximate search against exact, on these queries: {run.recall:.3f}")
    for result in run.results:
        lines += ["", f"query: {result.query}", f"{'rank':>4}  {'score':>7}  source"]
        lines += [f"{h.rank:>4}  {h.score:>7.4f}  {h.source}" for h in result.hits]
    return "\n".join(lines)
