"""Peak RSS of ``gadms curate run`` on hostile input, measured with ``/usr/bin/time -v``.

    python -m gadms.bench.curation_memory [--tmp DIR] [--member-gb 1.0] [--cases big-member ...]

Each case writes one source shard next to a small synthetic one, then curates
the folder in a fresh ``gadms curate run`` process and prints its peak resident
set size, exit status and the counts of ``report.json``:

- ``big-member``: a tar whose ``.jpg`` member holds ``--member-gb`` GB
  (over ``curation.source.max_member_bytes``: skipped unread);
- ``big-member-gz``: the same tar gzip-compressed (``.tar.gz``);
- ``png-bomb``: eight small PNGs of 7000 x 7000 pixels each (over
  ``curation.source.max_image_pixels``: refused before decoding);
- ``at-cap``: eight images of 4000 x 4000 = 16 M pixels, just at the pixel cap
  (decoded; detector batches hold at most the cap in pixels);
- ``parquet-big-group``: a Parquet file with one row group of twelve 48 MB image
  cells (over ``curation.source.max_row_group_bytes``: its rows fail unread);
- ``parquet-big-cells``: the same cells, one per row group (each group is read,
  each cell is over the byte cap and never copied out of Arrow);
- ``parquet-at-budget``: eight 31 MB cells, two to a row group (62 MB: just
  under both caps, so every group is decoded and every cell copied).

The target is a peak under ~500 MB whatever the input. Needs ``/usr/bin/time``
(Debian package ``time``) and about ``2 x --member-gb`` GB of free disk.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gadms.config import load_params
from gadms.synth.web import write_web_shards

CHUNK = 8 * 2**20


class _Repeat(io.RawIOBase):
    """A readable stream of ``size`` bytes of one repeated block (cheap to write, gzip compresses it)."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = np.random.default_rng(0).integers(0, 256, CHUNK, dtype=np.uint8).tobytes()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._left, CHUNK)
        buffer[:count] = self._block[:count]
        self._left -= count
        return count


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _meta(key: str) -> bytes:
    return json.dumps({"key": key, "status": "success"}).encode()


def big_member_shard(folder: Path, gigabytes: float, compress: bool) -> None:
    """One sample whose image member is ``gigabytes`` GB, then an ordinary small sample."""
    size = int(gigabytes * 2**30)
    path = folder / ("big.tar.gz" if compress else "big.tar")
    raw = gzip.open(path, "wb", compresslevel=1) if compress else path.open("wb")
    with raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("huge.jpg")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Repeat(size), CHUNK))
        _add(tar, "huge.json", _meta("huge"))
        _add(tar, "small.jpg", _jpeg((64, 128)))
        _add(tar, "small.json", _meta("small"))


def _jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 90, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 7).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def images_shard(folder: Path, name: str, data: bytes, suffix: str, count: int = 8) -> None:
    """``count`` samples that all carry the same image bytes."""
    with tarfile.open(folder / f"{name}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for index in range(count):
            _add(tar, f"{name}{index}.{suffix}", data)
            _add(tar, f"{name}{index}.json", _meta(f"{name}{index}"))


def parquet_shard(folder: Path, rows_per_group: int, cells: int = 12, cell_mb: float = 48) -> None:
    """``cells`` rows of ``cell_mb`` MB image cells (over the byte cap), ``rows_per_group`` to a row group."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, int(cell_mb * 2**20), dtype=np.uint8).tobytes() for _ in range(cells)]
    images.append(_jpeg((64, 128)))  # and one ordinary image
    keys = [f"big{i}" for i in range(cells)] + ["small"]
    table = pa.table({"key": keys, "jpg": pa.array(images, pa.binary())})
    pq.write_table(table, folder / "big.parquet", row_group_size=rows_per_group, compression="none")


CASES: dict[str, Callable[[Path, float], None]] = {
    "big-member": lambda folder, gb: big_member_shard(folder, gb, compress=False),
    "big-member-gz": lambda folder, gb: big_member_shard(folder, gb, compress=True),
    "png-bomb": lambda folder, gb: images_shard(folder, "pngbomb", _png(7000), "png"),
    "at-cap": lambda folder, gb: images_shard(folder, "atcap", _jpeg((4000, 4000)), "jpg"),
    "parquet-big-group": lambda folder, gb: parquet_shard(folder, rows_per_group=12),
    "parquet-big-cells": lambda folder, gb: parquet_shard(folder, rows_per_group=1),
    "parquet-at-budget": lambda folder, gb: parquet_shard(folder, rows_per_group=2, cells=8, cell_mb=31),
}


def peak_rss_mb(input_dir: Path, out_dir: Path) -> tuple[float, int, str]:
    """Curate ``input_dir`` in a fresh process; (peak RSS in MB, exit status, last line of its output)."""
    gadms = Path(sys.executable).with_name("gadms")
    command = ["/usr/bin/time", "-v", str(gadms), "curate", "run", "--input", str(input_dir)]
    command += ["--out", str(out_dir), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if match is None:
        raise SystemExit(f"error: /usr/bin/time printed no peak RSS: {done.stderr.strip()[-300:]}")
    lines = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith(("curated", "error"))), lines[0] if lines else "")
    return int(match.group(1)) / 1024, done.returncode, first


def _counts(out_dir: Path) -> str:
    report = out_dir / "report.json"
    if not report.is_file():
        return "no report.json"
    totals = json.loads(report.read_text())["totals"]
    counts = ", ".join(f"{key} {totals[key]}" for key in ("seen", "kept", "rejected", "failed"))
    return counts + (f"; failures {totals['failures']}" if totals["failures"] else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--member-gb", type=float, default=1.0, help="size of the big tar member, GB")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), default=list(CASES))
    args = parser.parse_args(argv)
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("error: /usr/bin/time is missing (Debian package 'time')")
    params = load_params(Path("params.yaml") if Path("params.yaml").is_file() else None)
    source = params.curation.source
    print(f"caps: max_member_bytes {source.max_member_bytes:,}, max_image_pixels {source.max_image_pixels:,}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for case in args.cases:
            folder = Path(tmp) / case / "web"
            if case.startswith("parquet"):  # a folder holding tars is read as tars: Parquet goes alone
                folder.mkdir(parents=True)
            else:
                write_web_shards(folder, 20, 0, params.synth, params.curation.filter, progress=False)
            CASES[case](folder, args.member_gb)
            out = Path(tmp) / case / "out"
            peak, status, line = peak_rss_mb(folder, out)
            print(f"{case:17s} peak RSS {peak:7.1f} MB  exit {status}  {_counts(out)}")
            print(f"{'':17s} {line}")
            shutil.rmtree(Path(tmp) / case)


if __name__ == "__main__":
    main()
