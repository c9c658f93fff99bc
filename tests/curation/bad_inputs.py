"""Builders of source inputs for the reader tests: images, tars (clean and broken), cut-off files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image

Entry = Union[tuple[str, bytes], tarfile.TarInfo]


def image_bytes(seed: int = 0, size: tuple[int, int] = (48, 32), fmt: str = "JPEG") -> bytes:
    """A small noisy RGB picture of ``size`` (width, height), encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def scrambled(data: bytes, start: int, stop: int, seed: int = 0) -> bytes:
    """``data`` with bytes ``start:stop`` replaced by seeded noise (a corrupt but complete file)."""
    noise = np.random.default_rng(seed).integers(0, 256, size=stop - start, dtype=np.uint8).tobytes()
    return data[:start] + noise + data[stop:]


def sample(key: str, seed: int = 0, text: str | None = None, meta: dict | None = None) -> list[tuple[str, bytes]]:
    """The ``KEY.jpg``, ``KEY.txt``, ``KEY.json`` members of one good img2dataset sample."""
    text = f"a photo number {seed}" if text is None else text
    meta = {"key": key, "caption": text, "status": "success"} if meta is None else meta
    return [
        (f"{key}.jpg", image_bytes(seed)),
        (f"{key}.txt", text.encode("utf-8")),
        (f"{key}.json", json.dumps(meta).encode("utf-8")),
    ]


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    """A link (symbolic by default, ``tarfile.LNKTYPE`` for hard) or device member."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def write_tar(path: Path, entries: Iterable[Entry]) -> Path:
    """Write a tar whose members are ``(name, data)`` files or prebuilt non-file ``TarInfo``s, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def member_span(path: Path, name: str) -> tuple[int, int]:
    """``(start, end)`` byte offsets of a member's data inside a tar."""
    with tarfile.open(path, "r") as tar:
        info = tar.getmember(name)
    return info.offset_data, info.offset_data + info.size


def cut_inside_member(path: Path, name: str) -> None:
    """Truncate a tar in the middle of member ``name``'s data."""
    start, end = member_span(path, name)
    _truncate(path, (start + end) // 2)


def cut_before_member(path: Path, name: str) -> None:
    """Truncate a tar halfway through the header of member ``name`` (everything before it stays whole)."""
    with tarfile.open(path, "r") as tar:
        header = tar.getmember(name).offset
    _truncate(path, header + 256)


def drop_end_marker(path: Path) -> None:
    """Remove the zero blocks after the last member, as a writer killed before closing would."""
    with tarfile.open(path, "r") as tar:
        last = tar.getmembers()[-1]
    _truncate(path, last.offset_data + -(-last.size // 512) * 512)


def _truncate(path: Path, size: int) -> None:
    """Keep only the first ``size`` bytes of a file."""
    with open(path, "r+b") as handle:
        handle.truncate(size)
