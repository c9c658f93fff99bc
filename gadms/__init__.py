"""GA-DMS person retrieval platform: curation, quality gate, versioning, training, evaluation."""

__version__ = "0.1.0"
