"""Start-up and planning at 10^4-10^5 shards: the corpus index read from S3, and one epoch's plan for 8 ranks.

    python -m gadms.bench.scale_shards [--planning 7500 75000] [--startup 10000] [--fallback 200] [--latency 0.08]

Planning: synthetic shard lists (1,000 to 1,700 pairs a shard, about 10M
pairs at 7.5k shards), planned as ``params.full.yaml`` trains (8 ranks,
8 slots per rank, 128 pairs per micro-batch): seconds per rank for
``StreamingPairs.plan``, and for the linear walk it replaced where that is
cheap enough to run. Start-up: a moto S3 server on 127.0.0.1 (started and
stopped here) holding tiny shard files and their corpus index; the seconds
training spends listing the corpus, reading and checking the index, and the
seconds without an index (one metadata footer per shard, read concurrently)
at a smaller shard count. Targets: planning 75k shards under 2 s a rank,
start-up at 10k shards under 30 s.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gadms.data.corpus_index as corpus_index
from gadms.config import StreamConfig
from gadms.data.corpus_index import CorpusIndexEntry, write_corpus_index
from gadms.data.shardplan import Segment, Shard, curated_index, numbered, steps_per_epoch
from gadms.data.streaming import StreamingPairs

RANKS, SLOTS, MICRO = 8, 8, 128  # params.full.yaml: 8 GPUs, train.stream.slots 8, global batch 1024
BUCKET = "gadms-scale"


def synthetic_shards(count: int, seed: int = 0) -> list[Shard]:
    """``count`` curated shards of 1,000 to 1,700 pairs each (paths are names only: nothing is read)."""
    pairs = np.random.default_rng(seed).integers(1000, 1701, count)
    return numbered([Shard(Path("corpus"), f"{i:06d}.tar", "curated", int(n), i) for i, n in enumerate(pairs)])


def linear_segments(order: list[Shard], start: int, length: int) -> list[Segment]:
    """The planner before the corpus index: every segment walks the shard list from its start (quadratic)."""
    total = sum(s.pairs for s in order)
    segments: list[Segment] = []
    position, end = start, start + length
    while position < end:
        lap, local = divmod(position, total)
        offset = 0
        for shard in order:
            if offset + shard.pairs > local:
                break
            offset += shard.pairs
        take = min(shard.pairs - (local - offset), end - position)
        segments.append(Segment(shard, local - offset, local - offset + take, position - (local - offset), lap == 0))
        position += take
    return segments


def _plan_seconds(stream: StreamingPairs, batches: int) -> list[float]:
    """Seconds of ``plan`` for each rank of epoch 0."""
    seconds = []
    for rank in range(RANKS):
        began = time.perf_counter()
        stream.plan(0, rank, RANKS, MICRO, batches)
        seconds.append(time.perf_counter() - began)
    return seconds


def _linear_rank_seconds(stream: StreamingPairs, batches: int) -> float:
    """Seconds the linear walk takes to plan the last rank's slots (the longest walks; the order of ``plan``)."""
    from gadms.data.shardplan import epoch_order, slot_batches

    quotas = slot_batches(batches, SLOTS)
    before = sum(quotas) * MICRO * (RANKS - 1)
    began = time.perf_counter()
    order = epoch_order(stream.shards, stream.seed, 0)
    for slot in range(SLOTS):
        linear_segments(order, before + sum(quotas[:slot]) * MICRO, quotas[slot] * MICRO)
    return time.perf_counter() - began


def measure_planning(shard_counts: list[int], linear_up_to: int = 10_000) -> list[dict[str, Any]]:
    """Seconds to plan one epoch on every rank of an 8-GPU run, per shard count.

    Args:
        shard_counts: corpus sizes in shards.
        linear_up_to: also time the old linear walk (last rank) for corpora up to this many shards.

    Returns:
        One dict per count: shards, pairs, seconds per rank (max and mean), the linear
        walk's seconds for the last rank (None when not run), and seconds to build the shard list from its entries.
    """
    rows = []
    for count in shard_counts:
        began = time.perf_counter()
        shards = synthetic_shards(count)
        build = time.perf_counter() - began
        stream = StreamingPairs(shards, None, None, seed=0, config=StreamConfig(slots=SLOTS))
        batches = steps_per_epoch(stream.total_pairs, MICRO * RANKS)
        seconds = _plan_seconds(stream, batches)
        linear = _linear_rank_seconds(stream, batches) if count <= linear_up_to else None
        rows.append(
            {
                "shards": count,
                "pairs": stream.total_pairs,
                "plan_s_per_rank_max": max(seconds),
                "plan_s_per_rank_mean": sum(seconds) / len(seconds),
                "linear_s_last_rank": linear,
                "shard_list_s": build,
            }
        )
    return rows


@contextmanager
def local_s3() -> Iterator[Any]:
    """A moto S3 server on a free loopback port with bucket :data:`BUCKET`; the environment points at it."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    S3FileSystem.clear_instance_cache()  # a filesystem made for another endpoint must not be reused
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        S3FileSystem.clear_instance_cache()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def _meta_bytes(pairs: int) -> bytes:
    """A curated ``meta/NAME.parquet`` listing ``pairs`` captions (one sample)."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": ["0"], "captions": [[f"caption {i}" for i in range(pairs)]]}), sink)
    return sink.getvalue()


def upload_corpus(client: Any, prefix: str, count: int, with_index: bool) -> str:
    """``count`` tiny curated shards (and their meta files, or the corpus index) under ``s3://BUCKET/prefix``.

    The tars are placeholders of distinct sizes: start-up reads only names, sizes and metadata.

    Returns:
        The corpus URL.
    """
    meta = _meta_bytes(2)
    objects = [(f"{prefix}/{i:06d}.tar", b"t" * (1 + i % 97)) for i in range(count)]
    if not with_index:
        objects += [(f"{prefix}/meta/{i:06d}.parquet", meta) for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), objects))
    url = f"s3://{BUCKET}/{prefix}"
    if with_index:
        entries = [CorpusIndexEntry(f"{i:06d}.tar", "curated", 1 + i % 97, 2) for i in range(count)]
        write_corpus_index(url, entries)
    return url


def _timed_index(url: str) -> tuple[float, int]:
    """Seconds of ``curated_index(url)`` (as training calls it) and the shards found."""
    began = time.perf_counter()
    shards = curated_index(url)
    return time.perf_counter() - began, len(shards)


def _index_parts(url: str) -> tuple[float, float]:
    """Seconds of the two parts of an indexed start-up: listing the corpus; reading and checking the index."""
    began = time.perf_counter()
    listing = corpus_index.list_shards(url, "curated") or {}
    listed = time.perf_counter()
    entries = corpus_index.read_corpus_index(url) or []
    if corpus_index.stale_shard(entries, listing, "curated") is not None:
        raise RuntimeError(f"{url}: the index does not match the uploaded shards")
    return listed - began, time.perf_counter() - listed


def _fallback_seconds(url: str, threads: int, latency_s: float) -> float:
    """Seconds of ``curated_index(url)`` without an index, ``threads`` footer reads in flight, each made
    ``latency_s`` slower (the wait of a remote store's round trip, which the local server does not have)."""
    saved_threads, read = corpus_index.FOOTER_THREADS, corpus_index.parquet_metadata

    def slow_read(path: Any) -> Any:
        time.sleep(latency_s)
        return read(path)

    corpus_index.FOOTER_THREADS = threads
    corpus_index.parquet_metadata = slow_read
    try:
        seconds, _ = _timed_index(url)
    finally:
        corpus_index.FOOTER_THREADS, corpus_index.parquet_metadata = saved_threads, read
    return seconds


def measure_startup(shard_count: int, fallback_count: int = 200, latency_s: float = 0.08) -> dict[str, Any]:
    """Training's start-up against a local S3 server: with the corpus index, and without it at a smaller count.

    Args:
        shard_count: shards of the indexed corpus.
        fallback_count: shards of the corpus without an index (each one's meta footer is read).
        latency_s: round trip added to each footer read in the second no-index timing (S3: 0.08 to 0.1 s).

    Returns:
        Seconds with the index (listing + one index read + check; those two parts timed again on their own);
        seconds without it (``FOOTER_THREADS`` footer reads in flight, and one at a time), on the local server
        as it is and with ``latency_s`` added per read; the upload seconds (set-up, not start-up).
    """
    with local_s3() as client:
        began = time.perf_counter()
        indexed = upload_corpus(client, "indexed", shard_count, with_index=True)
        bare = upload_corpus(client, "bare", fallback_count, with_index=False)
        upload = time.perf_counter() - began
        with_index, found = _timed_index(indexed)
        listing, read_check = _index_parts(indexed)
        threads = corpus_index.FOOTER_THREADS
        fallback = {
            f"fallback_{label}_s": _fallback_seconds(bare, n, latency)
            for label, n, latency in [
                ("concurrent", threads, 0.0),
                ("one_at_a_time", 1, 0.0),
                ("concurrent_with_latency", threads, latency_s),
                ("one_at_a_time_with_latency", 1, latency_s),
            ]
        }
    if found != shard_count:
        raise RuntimeError(f"found {found} shards, uploaded {shard_count}")
    return {
        "shards": shard_count,
        "index_s": with_index,
        "index_listing_s": listing,
        "index_read_check_s": read_check,
        "fallback_shards": fallback_count,
        "footer_threads": threads,
        "latency_s": latency_s,
        **fallback,
        "upload_s": upload,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planning", type=int, nargs="*", default=[7500, 75000], help="shard counts to plan")
    parser.add_argument("--startup", type=int, default=10000, help="shards of the indexed S3 corpus")
    parser.add_argument("--fallback", type=int, default=200, help="shards of the S3 corpus without an index")
    parser.add_argument("--latency", type=float, default=0.08, help="seconds added to each footer read (S3-like)")
    args = parser.parse_args(argv)
    for row in measure_planning(args.planning):
        print(json.dumps({"planning": row}))
    if args.startup:
        print(json.dumps({"startup": measure_startup(args.startup, args.fallback, args.latency)}))


if __name__ == "__main__":
    main()
