"""A curated corpus written straight in the on-disk format (tar shards + meta/NAME.parquet), sizes set by the test."""

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gadms.reproducible_writes import ShardWriter, json_bytes


def jpeg(seed: int, size: tuple[int, int] = (32, 64), noise: bool = False) -> bytes:
    """A real JPEG: a flat colour, or noise (large, hard to compress) with ``noise``."""
    rng = np.random.default_rng(seed)
    if noise:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_corpus(
    out: Path,
    sizes: list[int],
    captions: int = 2,
    size: tuple[int, int] = (32, 64),
    noise: bool = False,
    corrupt: dict[str, bytes] | None = None,
) -> Path:
    """Shards ``00000.tar``, ... with ``sizes[i]`` samples of ``captions`` captions each, and their meta Parquet.

    Args:
        out: the corpus directory.
        sizes: samples per shard.
        captions: captions per sample.
        size: crop width, height.
        noise: noisy (large) crops.
        corrupt: member name -> bytes written instead (the meta still lists the sample).

    Returns:
        ``out``.
    """
    (out / "meta").mkdir(parents=True, exist_ok=True)
    number = 0
    for shard, count in enumerate(sizes):
        keys, caps = [], []
        with ShardWriter(out / f"{shard:05d}.tar") as tar:
            for _ in range(count):
                key = f"{shard:05d}{number:05d}"
                texts = [f"person {number} wears outfit {k}" for k in range(captions)]
                for name, data in (
                    (f"{key}.jpg", jpeg(number, size, noise)),
                    (f"{key}.json", json_bytes({"captions": texts})),
                ):
                    tar.add(name, (corrupt or {}).get(name, data))
                keys.append(key)
                caps.append(texts)
                number += 1
        pq.write_table(pa.table({"key": keys, "captions": caps}), out / "meta" / f"{shard:05d}.parquet")
    return out
