"""Writing an index so that no reader ever sees it half-written: a new or rebuilt index is built beside its
target and swapped into place.

``INDEX`` is built in ``.INDEX.building`` next to it (a build of the same
model stopped there is resumed; one of another model is discarded) and then
put in place in one step: renamed onto a missing or empty ``INDEX``, or
exchanged with an existing one (Linux ``renameat2(RENAME_EXCHANGE)``: the path
always names a complete index), after which the old one is deleted. A reader
that opened the old index keeps reading its files (they stay readable while
open). Where the exchange is not available the old index is renamed away
first and the new one renamed in (readers retry, see
:func:`gadms.search.index.open_index`). One writer per index: the lock is the
file ``.INDEX.lock`` next to it, so that it stays the same file across swaps.
Extending an existing index with the model that built it stays in place,
batch by batch (see :mod:`gadms.search.index`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gadms.search.index import META_FILE, read_meta
from gadms.search.model import SearchError, SearchModel

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def lock_file(index_dir: Path) -> Path:
    """The index's one-writer lock file, ``.INDEX.lock`` next to it."""
    return index_dir.parent / f".{index_dir.name}.lock"


def staging_dir(index_dir: Path) -> Path:
    """Where a new or rebuilt index is built before it is put in place."""
    return index_dir.parent / f".{index_dir.name}.building"


@contextmanager
def index_writer(index_dir: Path, command: str, wait: float = 0.0) -> Iterator[Path]:
    """Hold the one-writer lock of ``index_dir`` (see :func:`gadms.locks.writer_lock`)."""
    from gadms.locks import writer_lock

    with writer_lock(index_dir, command, lock_file=lock_file(index_dir), wait=wait) as path:
        yield path


def is_index(directory: Path) -> bool:
    """Whether ``directory`` holds an index (its ``index.json``)."""
    return (Path(directory) / META_FILE).is_file()


def check_target(index_dir: Path) -> None:
    """Refuse an ``--out`` that exists and is neither an index nor an empty folder (nothing would be replaced).

    Raises:
        SearchError: one line naming the folder.
    """
    if index_dir.exists() and not is_index(index_dir):
        if not index_dir.is_dir() or any(index_dir.iterdir()):
            raise SearchError(f"--out {index_dir}: exists and is not a search index; choose another --out")


def fresh_staging(index_dir: Path, searcher: SearchModel, resume: bool = True) -> Path:
    """The staging folder, emptied unless it holds a stopped build of ``searcher``'s model (then resumed)."""
    staging = staging_dir(index_dir)
    if staging.exists() and not (resume and _same_model(staging, searcher)):
        shutil.rmtree(staging)
    return staging


def _same_model(staging: Path, searcher: SearchModel) -> bool:
    try:
        return read_meta(staging).model.digest == searcher.identity.digest
    except SearchError:
        return False


@contextmanager
def staged(index_dir: Path, searcher: SearchModel, resume: bool = True) -> Iterator[Path]:
    """Build in the staging folder, then put it in place of ``index_dir``.

    An error removes the staging folder (nothing half-written is left); an interrupt (Ctrl-C, SIGTERM) keeps
    it, and the next build of the same model goes on from there.
    """
    staging = fresh_staging(index_dir, searcher, resume)
    try:
        yield staging
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, index_dir)


def publish(staging: Path, index_dir: Path) -> None:
    """Put the complete index at ``staging`` in place of ``index_dir`` in one step; the old one is deleted."""
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    if not index_dir.exists() or (index_dir.is_dir() and not any(index_dir.iterdir())):
        os.replace(staging, index_dir)  # rename(2) replaces a missing or empty folder atomically
        return
    if not _exchange(staging, index_dir):
        old = index_dir.parent / f".{index_dir.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(index_dir, old)
        os.replace(staging, index_dir)
        staging = old
    shutil.rmtree(staging)  # now the old index


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, f"cannot swap {a} into place of {b}: {os.strerror(code)}")
