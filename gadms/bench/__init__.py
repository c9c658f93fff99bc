"""Benchmark scripts: ``python -m gadms.bench.<name>``; they print tables, they do not assert."""
