"""Byte-reproducible file writing: WebDataset tar shards, JSON, JPEG, atomic renames.

Identical content always gives identical bytes (fixed tar metadata, sorted JSON
keys, fixed JPEG settings), which is what makes a DVC hash of the output mean
something. Writes go to a temporary file that is renamed into place, so a
killed run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no extra whitespace, UTF-8, trailing newline."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def jpeg_bytes(image: np.ndarray | Image.Image, quality: int) -> bytes:
    """Encode RGB pixels as baseline JPEG with fixed settings (no EXIF, no timestamps)."""
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    pil.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class ShardWriter:
    """Writes one WebDataset tar shard with fixed member metadata.

    Members appear in the order they are added; callers add samples in key
    order. Use as a context manager: the tar is renamed into place on exit.
    Names of up to 100 ASCII characters get a plain ustar header; longer ones a
    PAX extended header (the same bytes as ustar for every name that fits).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> "ShardWriter":
        tmp = self._ctx.__enter__()
        self._tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)
        return self

    def add(self, name: str, data: bytes) -> None:
        """Add one member (``KEY.ext``) with zeroed times and owners."""
        assert self._tar is not None, "ShardWriter used outside its context"
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tar is not None
        self._tar.close()
        self._ctx.__exit__(exc_type, exc, tb)
