"""Check a corpus version as checked out against the md5 hashes DVC recorded for it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gadms.versioning.commands import VersioningError


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes (DVC 3's file hash)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def verify_workspace(root: Path, rel: Path, objects: Path, md5: str) -> list[dict[str, str]]:
    """Check version ``md5`` as checked out in ``root/rel`` against the hashes DVC recorded for it.

    The cache's file list (``<md5>.dir``) must hash to ``md5``, and every file it lists must be in the
    workspace with the md5 it records. A file with other bytes is removed from the workspace, so nothing
    reads them.

    Args:
        root: the DVC repository root.
        rel: the corpus directory relative to ``root``.
        objects: the cache's object folder (``<cache>/files/md5``).
        md5: the directory hash, without ``.dir``.

    Returns:
        The file list.

    Raises:
        VersioningError: one line naming the first bad file (or the bad file list) and its cache object.
    """
    listing = objects / md5[:2] / f"{md5[2:]}.dir"
    actual = file_md5(listing) if listing.is_file() else "missing"
    if actual != md5:
        raise VersioningError(
            f"{listing}: the DVC cache's file list of version {md5} is corrupt (md5 {actual}); delete it and run "
            "again to fetch it from the remote"
        )
    manifest = read_manifest(listing)
    for entry in manifest:
        _verify_file(root / rel / entry["relpath"], entry["md5"], objects, md5)
    return manifest


def read_manifest(listing: Path) -> list[dict[str, str]]:
    """The entries of a ``.dir`` object whose hash was checked; one line when they are malformed."""
    try:
        manifest = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, list) or not _all_entries(manifest):
        raise VersioningError(f"{listing}: not a DVC directory listing")
    return manifest


def _all_entries(manifest: list[Any]) -> bool:
    """Whether every entry names a file and its md5."""
    return all(
        isinstance(entry, dict) and isinstance(entry.get("md5"), str) and isinstance(entry.get("relpath"), str)
        for entry in manifest
    )


def _verify_file(path: Path, expected: str, objects: Path, version: str) -> None:
    """Refuse a workspace file missing or with other bytes than its recorded md5 (and remove the bad copy)."""
    actual = file_md5(path) if path.is_file() else "missing"
    if actual == expected:
        return
    if path.is_file():
        path.unlink()
    cached = objects / expected[:2] / expected[2:]
    raise VersioningError(
        f"{path}: md5 {actual}, but version {version} records {expected}; the DVC object {cached} (or the "
        "remote's copy) is corrupt: delete it and run again to fetch a good copy (the bad file was removed)"
    )
