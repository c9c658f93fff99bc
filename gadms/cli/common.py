"""What every ``gadms`` command shares: parameter loading, the ``--seed`` check and one-line user errors."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional

import typer

from gadms.config import MAX_SEED, ConfigError, Params, load_params


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Report expected failures as ``error: ...`` on one line, exit status 2."""
    from gadms.curation.chat import ChatError
    from gadms.versioning.dvc import VersioningError

    try:
        yield
    except (ConfigError, UserError, ValueError, OSError, VersioningError, ChatError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    except RecursionError:  # a last resort: every input limit should stop deep structures before this
        typer.echo("error: input nested too deeply to process (maximum recursion depth exceeded)", err=True)
        raise typer.Exit(2) from None


def cli_params(
    path: Optional[Path], overrides: Optional[list[str]], extra: Mapping[str, object] | None = None
) -> Params:
    """Load parameters; ``extra`` maps keys to command-line values (None = not given)."""
    from gadms.file_rules import use_limits
    from gadms.tracking.redact import reveal_override_secrets

    sets = reveal_override_secrets(list(overrides or []))  # a flow's torchrun launch passes credentials by reference
    for key, value in (extra or {}).items():
        if value is not None:
            sets.append(f"{key}={value}")
    params = load_params(path, sets)
    use_limits(params.curation.source)  # every reader of the command (and its workers) takes the params' caps
    return params


def checked_seed(seed: int) -> int:
    """A ``--seed`` value, refused unless it lies in 0..MAX_SEED (what the parameter file's ``seed`` allows)."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: must be between 0 and {MAX_SEED} (2**64 - 1)")
    return seed
