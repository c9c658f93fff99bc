"""Evaluation: text-to-image retrieval metrics (Rank-k, mAP, mINP), chunked so any gallery size fits in memory."""

from gadms.eval.metrics import retrieval_metrics, retrieval_metrics_from_features

__all__ = ["retrieval_metrics", "retrieval_metrics_from_features"]
