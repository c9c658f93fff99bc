"""No process outlives its command; the waits for the services a command starts hold on a busy machine.

A long command (``gadms pipeline``, ``gadms train ...``, ``gadms index``, ``gadms serve`` and every torchrun
rank) calls :func:`guard` first. Three layers, each enough for the case it covers:

1. **A watchdog process** (:func:`watchdog_main`): a child in its own session, stdio on /dev/null, deaf to
   SIGINT and SIGHUP (a SIGTERM, as an outer watchdog ending a whole tree sends, ends it). It records the
   command's descendants every 0.5 s as ``(pid, create time)`` pairs. When the command is gone, by any signal
   including SIGKILL, it ends every recorded process still running (a pid reused by an unrelated process has
   another create time and is spared) and their own children: SIGTERM, 2 s of grace, then SIGKILL; then it
   exits. The Prefect ephemeral API server, the multiprocessing forkserver and its resource tracker, and
   DataLoader workers are all covered, whoever started them. It also ends them after a normal exit.
2. **Signal handlers in the command.** SIGTERM and SIGINT run the stop hooks (:func:`on_stop`), end the
   command's descendants (same steps) and exit at once with 143 or 130 after one line on stderr. The exit
   skips interpreter shutdown on purpose: that shutdown joins the orchestrator's worker threads, which would
   train on for minutes. During a Prefect flow run Prefect's own SIGTERM handler runs first (it raises
   ``TerminationSignal`` through the flow, which marks the run Crashed) and then hands the signal on here.
3. **Parent-death signals** (Linux ``prctl(PR_SET_PDEATHSIG)``; a no-op elsewhere, where layer 1 still acts).
   DataLoader workers (:func:`loader_worker_init` is their ``worker_init_fn``) get SIGKILL when the process that
   forked them ends; a torchrun rank gets SIGTERM when its torchrun agent ends; a ``gadms`` command started
   by another one through :func:`linked_env` (the flows' torchrun launch) gets SIGTERM when that one ends.

The stop hooks record the stop where it must show, e.g. the open MLflow runs end KILLED instead of staying
RUNNING. They run in a helper thread for at most :data:`STOP_HOOKS_TIMEOUT_S` in all, so a hook waiting on a
lock that the interrupted code holds cannot hold up the exit.

:func:`guard` also sets, unless the environment already does, Prefect's start-up waits sized for a loaded
machine (:data:`BUSY_MACHINE_WAITS`): Prefect's 20 s default for its ephemeral server was seen to run out with
a load average near 10; and it turns Prefect's usage reporting off (:data:`NO_PREFECT_TELEMETRY`): the server
it starts would otherwise try to send a heartbeat every 10 minutes and, offline, log an error each time.
Prefect reads its settings when first imported, so :func:`guard` runs before that.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import psutil

WATCH_INTERVAL_S = 0.5
GRACE_S = 2.0
PR_SET_PDEATHSIG = 1
LINKED_PARENT = "GADMS_DIE_WITH_PARENT"  # set by linked_env(): this pid's death also ends the child
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}

# Waits sized for a machine with a load average near 10 (Prefect's defaults: 20 s, 10 s, 5 s, 60 s).
BUSY_MACHINE_WAITS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
    "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    "PREFECT_API_REQUEST_TIMEOUT": "180",
}

# Usage reporting of Prefect off: the server's heartbeat to sens-o-matic.prefect.io, the client's events.
NO_PREFECT_TELEMETRY = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
}
STOP_HOOKS_TIMEOUT_S = 10.0

_guarded: dict[str, object] = {}
_stop_hooks: dict[int, Callable[[], object]] = {}


def guard(command: str | None = None) -> None:
    """Make sure no child process outlives this command; size Prefect's start-up waits for a busy machine.

    Idempotent: a second call in one process does nothing.

    Args:
        command: the command's name for the one line printed on SIGTERM/SIGINT (default: ``gadms`` and the
            first two words of the command line, e.g. ``gadms train pretrain``).
    """
    if _guarded.get("pid") == os.getpid():
        return
    allow_for_busy_machine()
    _follow_launcher()
    watchdog = start_watchdog(os.getpid())
    words = [word for word in sys.argv[1:3] if not word.startswith("-")]
    # the Popen is kept: the watchdog runs as long as this process, and is never waited for
    _guarded.update(pid=os.getpid(), command=command or " ".join(["gadms", *words]), watchdog=watchdog)
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        for signum in EXIT_CODES:
            signal.signal(signum, _on_stop_signal)


def allow_for_busy_machine() -> None:
    """Set each of :data:`BUSY_MACHINE_WAITS` and :data:`NO_PREFECT_TELEMETRY` in the environment unless it is set
    already.
    """
    for key, value in {**BUSY_MACHINE_WAITS, **NO_PREFECT_TELEMETRY}.items():
        os.environ.setdefault(key, value)


def on_stop(hook: Callable[[], object]) -> Callable[[], None]:
    """Run ``hook`` when SIGTERM or SIGINT stops this guarded command, before it exits (see :func:`guard`).

    Hooks run in the order they were added, each at most once per stop; one that raises does not keep the
    others from running.

    Args:
        hook: a quick function without arguments.

    Returns:
        A function that removes the hook again (for when what it records is over).
    """
    key = id(hook)
    _stop_hooks[key] = hook

    def remove() -> None:
        _stop_hooks.pop(key, None)

    return remove


def run_stop_hooks(timeout_s: float = STOP_HOOKS_TIMEOUT_S) -> None:
    """Run the :func:`on_stop` hooks in a helper thread; give up waiting for them after ``timeout_s``."""

    def run_all() -> None:
        for hook in list(_stop_hooks.values()):
            try:
                hook()
            except Exception:  # a stop hook must not keep the others or the exit from happening
                continue

    if not _stop_hooks:
        return
    helper = threading.Thread(target=run_all, name="gadms-stop-hooks", daemon=True)
    helper.start()
    helper.join(timeout_s)


def linked_env() -> dict[str, str]:
    """This process's environment for a ``gadms`` child that must end when this process ends."""
    return {**os.environ, LINKED_PARENT: str(os.getpid())}


def loader_worker_init(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker computes on one thread (the training process holds the
    cores: a worker with a thread pool of its own oversubscribes them) and gets SIGKILL when the process that
    started it ends."""
    import torch  # loaded already in a worker; imported here to keep this module light

    torch.set_num_threads(1)
    die_with_parent(signal.SIGKILL)


def die_with_parent(signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when its parent ends (Linux; elsewhere nothing happens).

    When the parent ended before the request was in place, this process exits at once.

    Returns:
        Whether the request is in place.
    """
    if not sys.platform.startswith("linux"):
        return False  # no parent-death signal here: the watchdog (layer 1) still ends the process
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent or parent == 1:
        os._exit(128 + int(signum))  # the parent ended before the request took hold
    return True


def _follow_launcher() -> None:
    """End with the process that launched this one: a torchrun agent, or a ``gadms`` parent via linked_env."""
    linked = os.environ.pop(LINKED_PARENT, None)  # popped: it is meant for this process only, not its children
    if linked == str(os.getppid()):
        die_with_parent(signal.SIGTERM)
    elif "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ:
        die_with_parent(signal.SIGTERM)


def start_watchdog(pid: int) -> subprocess.Popen:
    """Start the watchdog process of ``pid`` (which must be this process: the watchdog is its child)."""
    root = str(Path(__file__).resolve().parents[1])  # this very gadms, whatever the working directory holds
    code = f"import sys; sys.path.insert(0, {root!r}); import gadms.lifetime as m; sys.exit(m.watchdog_main())"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or a signal to the command's process group does not reach it
    )


def _on_stop_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGINT: run the stop hooks, end this command's child processes, say so in one line, exit with
    128 + signal.
    """
    if _guarded.get("pid") != os.getpid():  # a forked child inherited the handler: behave as by default
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        signal.raise_signal(signum)
        return
    for repeated in EXIT_CODES:  # a second Ctrl-C while children are ended changes nothing
        signal.signal(repeated, signal.SIG_IGN)
    run_stop_hooks()
    watchdog = getattr(_guarded.get("watchdog"), "pid", None)
    ended = end_processes(p for p in _descendants(os.getpid()) if p.pid != watchdog)
    name = signal.Signals(signum).name
    sys.stdout.flush()
    # a new line first: a progress bar may hold the current one
    sys.stderr.write(f"\n{_guarded.get('command')}: stopped by {name}; {ended} child processes ended\n")
    sys.stderr.flush()
    os._exit(EXIT_CODES.get(signal.Signals(signum), 128 + signum))


def _descendants(pid: int) -> list[psutil.Process]:
    """The running descendants of ``pid`` (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def end_processes(processes: Iterable[psutil.Process], grace_s: float = GRACE_S) -> int:
    """SIGTERM each process and its own descendants, SIGKILL what still runs after ``grace_s``.

    ``psutil.Process`` checks the create time before signalling, so a pid taken by an unrelated process is spared.

    Returns:
        How many processes were signalled.
    """
    targets: dict[int, psutil.Process] = {}
    for process in processes:
        for member in (process, *_descendants_of(process)):
            targets.setdefault(member.pid, member)
    alive = []
    for process in targets.values():
        try:
            process.terminate()
            alive.append(process)
        except psutil.Error:
            continue
    left = _wait_gone(alive, grace_s)
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            continue
    _wait_gone(left, grace_s)
    return len(alive)


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``processes`` to end; return those still running.

    A zombie (ended, not yet reaped by its new parent, which in a container may never come) counts as ended.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = [process for process in processes if _running(process)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` (the very one: pid and create time) still runs; a zombie does not. Reaps a child."""
    try:
        if not process.is_running():
            return False
        if process.status() == psutil.STATUS_ZOMBIE:
            process.wait(timeout=0)  # reaps it when it is this process's child; harmless otherwise
            return False
        return True
    except (psutil.Error, ChildProcessError):
        return False


def _descendants_of(process: psutil.Process) -> list[psutil.Process]:
    """``process``'s running descendants, when it is still the process it was (same pid and create time)."""
    try:
        return process.children(recursive=True) if process.is_running() else []
    except psutil.Error:
        return []


def watch(pid: int, interval_s: float = WATCH_INTERVAL_S) -> int:
    """The watchdog's loop: record ``pid``'s descendants until it ends, then end those still running.

    Args:
        pid: the watched command; the watchdog must be its child (its end shows as a new parent pid).
        interval_s: seconds between two records.

    Returns:
        How many processes were ended.
    """
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    while os.getppid() == pid:
        for process in _descendants(pid):
            if process.pid != me:
                seen[process.pid] = process  # psutil.Process keeps the create time: a reused pid is not it
        seen = {key: p for key, p in seen.items() if p.is_running()}
        time.sleep(interval_s)
    return end_processes(p for p in seen.values() if p.pid != me)


def watchdog_main() -> int:
    """The watchdog process (argument: the command's pid), deaf to a terminal's Ctrl-C and hang-up."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    watch(int(sys.argv[1]))
    return 0
