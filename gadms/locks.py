"""One writer per output: an exclusive lock on a folder for as long as a command writes it.

The lock is ``fcntl.flock`` on a lock file (``FOLDER/.lock`` unless told
otherwise). The kernel drops it when the holder's process ends, even by
``kill -9``, so a crashed run never blocks the next one. While it is held the
file records the holder: ``{"pid", "command", "since"}``; a second run reads it
to say in one line who holds the folder. The file itself is never deleted
(deleting a lock file lets two runs lock two different files).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

LOCK_NAME = ".lock"
POLL_SECONDS = 0.1


class OutputBusy(ValueError):
    """Another process is writing the folder; the message is one line naming the folder and the holder."""


def holder_text(lock_file: Path) -> str:
    """Who holds ``lock_file`` as the lock file records it: ``gadms index (pid 1234, since 18:40:02 UTC)``."""
    try:
        raw = json.loads(Path(lock_file).read_text(encoding="utf-8"))
        command, pid, since = str(raw["command"]), int(raw["pid"]), str(raw["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return "run (holder unknown)"
    return f"{command} (pid {pid}, since {since})"


def _record(handle: IO[str], command: str) -> None:
    """Write this process as the holder into the (locked) lock file."""
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "command": command, "since": since}) + "\n")
    handle.flush()


def _try_lock(handle: IO[str], wait: float) -> bool:
    """Take the exclusive lock on ``handle``, polling for up to ``wait`` seconds; whether it was taken."""
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


@contextmanager
def writer_lock(
    folder: Path,
    command: str,
    hint: str = "wait for it or choose another --out",
    wait: float = 0.0,
    lock_file: Path | None = None,
) -> Iterator[Path]:
    """Hold the one-writer lock of ``folder`` for the ``with`` block.

    Args:
        folder: the output folder.
        command: what writes it, recorded for a second run's message (e.g. ``gadms index``).
        hint: the advice ending a second run's message.
        wait: seconds to wait for the holder to finish before giving up (0: give up at once).
        lock_file: the lock file (default ``folder/.lock``); its folder is created when missing.

    Yields:
        The lock file's path.

    Raises:
        OutputBusy: another process holds the lock (after ``wait`` seconds).
    """
    folder = Path(folder)
    path = Path(lock_file) if lock_file is not None else folder / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:  # closing the file releases the lock
        if not _try_lock(handle, wait):
            raise OutputBusy(f"{folder} is being written by another {holder_text(path)}; {hint}")
        _record(handle, command)
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()  # no stale holder is shown once the lock is free


PIPELINE_LOCK = ".pipeline.lock"  # its own lock file: stages lock folders of their own, the work tree included
_held_pipeline_locks: dict[Path, int] = {}  # pipeline lock files held by this process (value: its pid)


@contextmanager
def pipeline_lock(work_dir: Path, command: str) -> Iterator[None]:
    """Hold the pipeline lock of ``work_dir`` (``WORK/.pipeline.lock``) for the ``with`` block: one pipeline per
    work tree, however it is started.

    Re-entrant within one process: ``gadms pipeline`` takes it before the flow starts (so a busy work tree is
    refused before Prefect starts) and the flow, which takes it however it is run, finds it held already.

    Raises:
        OutputBusy: another process holds it; one line naming the holder, ending ``wait for it``.
    """
    lock_file = (Path(work_dir) / PIPELINE_LOCK).absolute()
    if _held_pipeline_locks.get(lock_file) == os.getpid():
        yield
        return
    with writer_lock(Path(work_dir), command, "wait for it", lock_file=lock_file):
        _held_pipeline_locks[lock_file] = os.getpid()
        try:
            yield
        finally:
            _held_pipeline_locks.pop(lock_file, None)


@contextmanager
def pipeline_lock_or_busy(work_dir: Path, command: str) -> Iterator[OutputBusy | None]:
    """Hold :func:`pipeline_lock` for the ``with`` block and yield None; when another process holds it, hold
    nothing and yield why (the :class:`OutputBusy` that says who).
    """
    with ExitStack() as held:
        busy = None
        try:
            held.enter_context(pipeline_lock(work_dir, command))
        except OutputBusy as exc:
            busy = exc
        yield busy
