"""Dataset readers: the retrieval benchmarks, WebPerson Parquet and the project's curated shards.

Modules: ``benchmarks`` (CUHK-PEDES, ICFG-PEDES, RSTPReid annotation files),
``webperson`` (published WebPerson Parquet), ``curated`` (our WebDataset tar
shards), ``stats`` (per-split counts and a text table), ``problems`` (the
error and bad-record types every reader shares) and ``stream`` (the sample
and tally types of the streaming readers).
"""
