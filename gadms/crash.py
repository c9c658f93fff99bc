"""The last line of defence: an exception that no command expected becomes one line and a log file.

Commands report the failures they expect themselves (``error: ...``, exit 2; a
failed quality gate exits 1). Anything else that escapes (a bug, a library
failing in a way nobody foresaw) would print a Python traceback. Instead
:func:`last_line_of_defence` writes the traceback to a log file of its own (one
per failure, named by time and process id, under ``$XDG_STATE_HOME/gadms/logs``
or ``~/.local/state/gadms/logs``, else the system temporary folder) and prints
one line on stderr that names the command, the exception and that file, exit
status 70 (``EX_SOFTWARE`` of sysexits.h). Ctrl-C prints ``interrupted``, exit
status 130; a usage error (unknown option, bad value) prints one line, exit status 2 (:func:`run_app`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import typer

EXIT_UNEXPECTED = 70  # EX_SOFTWARE: an internal error, not the user's input
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def log_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where failure logs go: ``$XDG_STATE_HOME/gadms/logs``, else ``~/.local/state/gadms/logs``."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "gadms" / "logs"


def command_words(command: object, args: Sequence[str], prog: str = "gadms") -> str:
    """The command a command line runs, e.g. ``gadms train pretrain`` (its options and arguments left out).

    Args:
        command: the top click group (Typer's or click's: anything with a ``commands`` mapping).
        args: the command line after the program name.
        prog: the program name.
    """
    words = [prog]
    for token in args:
        commands = getattr(command, "commands", None)
        if not isinstance(commands, Mapping) or token not in commands:
            break
        command = commands[token]
        words.append(token)
    return " ".join(words)


def _new_file(folder: Path, name: str, text: str) -> Path:
    """Create ``folder/name`` (which must not exist yet; owner-only) holding ``text``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: never through a planted link
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
        out.write(text)
    return path


def write_failure_log(command: str, exc: BaseException, environ: Mapping[str, str] | None = None) -> Path | None:
    """Write the command line and the traceback of ``exc`` to a new log file.

    Args:
        command: the command that failed, e.g. ``gadms train pretrain``.
        exc: the exception.
        environ: the environment (default: this process's).

    Returns:
        The file, or None when neither the log folder nor the temporary folder can be written.
    """
    from gadms.tracking.redact import redact_credentials

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = redact_credentials(f"{command}\nargv: {sys.argv!r}\ntime: {stamp}\npid: {os.getpid()}\n\n{trace}")
    name = f"{stamp}-{os.getpid()}.log"
    for folder, prefix in ((log_dir(environ), ""), (Path(tempfile.gettempdir()), "gadms-")):
        try:
            return _new_file(folder, prefix + name, text)
        except OSError:
            continue
    return None


def failure_line(command: str, exc: BaseException, log: Path | None) -> str:
    """The one line shown for an unexpected failure: command, exception type, first line of its message, log."""
    lines = str(exc).strip().splitlines()
    first = "".join(c if c.isprintable() else "?" for c in lines[0]) if lines else ""  # no terminal escapes
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    where = f"traceback in {log}" if log is not None else "no log written: log folder and temp folder not writable"
    return f"{command}: unexpected error: {what} ({where})"


def usage_line(exc: Exception) -> str:
    """A usage error (unknown option, bad value, missing argument) as one line, with where help is."""
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
    ctx = getattr(exc, "ctx", None)
    return f"error: {message}" + (f" (see '{ctx.command_path} --help')" if ctx is not None else "")


def run_app(app: Callable[..., object], args: list[str], prog: str = "gadms") -> int:
    """Run a Typer app on ``args`` and return its exit status; a usage error is one line, exit status 2.

    Args:
        app: the Typer application.
        args: the command line after the program name.
        prog: the program name.

    Returns:
        0 when the command returns; its own status for ``typer.Exit``; 2 for a usage error; 130 for Ctrl-C.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # Typer vendors click

    try:
        returned = app(args=args, prog_name=prog, standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `gadms` or a group with no command: its help, as before
        exc.show()
        return exc.exit_code
    except ClickException as exc:
        typer.echo(usage_line(exc), err=True)
        return exc.exit_code
    except typer.Abort:
        returned = EXIT_INTERRUPTED
    if returned == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into exit status 130, silently
        typer.echo("interrupted", err=True)
    return returned if isinstance(returned, int) else 0


@contextmanager
def last_line_of_defence(command: Callable[[], str]) -> Iterator[None]:
    """Turn an unexpected exception into one line on stderr, a log file and exit status 70.

    Args:
        command: gives the name of the command that runs (called only on failure).

    Raises:
        SystemExit: 70 for an unexpected exception, 130 when interrupted; a command's own exit passes unchanged.
    """
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (SystemExit, typer.Exit):  # a command's own exit status passes unchanged
        raise
    except Exception as exc:
        name = _safe_command(command)
        typer.echo(failure_line(name, exc, _safe_log(name, exc)), err=True)
        raise SystemExit(EXIT_UNEXPECTED) from None


def _safe_log(command: str, exc: BaseException) -> Path | None:
    """:func:`write_failure_log`, or None if writing the log fails in any way (the line is still shown)."""
    try:
        return write_failure_log(command, exc)
    except Exception:
        return None


def _safe_command(command: Callable[[], str]) -> str:
    """The command's name, or ``gadms`` when even that cannot be worked out."""
    try:
        return command()
    except Exception:
        return "gadms"
