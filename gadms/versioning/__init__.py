"""Corpus versioning: the curated corpus directory tracked by DVC, found again by its hash."""
