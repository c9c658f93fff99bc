"""Person search: encode a gallery into an index with a trained model, rank it for text queries, serve a page.

Modules by concept: :mod:`~gadms.search.model` (which model, loaded from where, and its identity),
:mod:`~gadms.search.sources` (gallery items from a folder, a benchmark split or curated shards),
:mod:`~gadms.search.index` (the on-disk index and its incremental build), :mod:`~gadms.search.ranking`
(exact and approximate top-k), :mod:`~gadms.search.figures` and :mod:`~gadms.search.web`; the CLI commands
are in :mod:`~gadms.cli.search`.
"""
