"""Keep API keys out of what is logged to MLflow.

params.yaml names the environment variables that hold the curation services'
keys (``curation.templates.api_key_env``, ``curation.captioning.api_key_env``),
never the keys. A :class:`Redactor` reads those variables once and replaces
any occurrence of their values in a parameter, tag or text before it is
logged (a URL with an embedded key, an error message quoting a header, ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gadms.config import Params

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
# Shorter values ("1", "yes") would redact ordinary text and cannot be real keys.
MIN_SECRET_LENGTH = 4


def secret_env_names(params: Params) -> tuple[str, ...]:
    """The environment variables params.yaml names as holding secrets.

    Args:
        params: the run's parameters.

    Returns:
        Their names, without duplicates, in a fixed order.
    """
    names = (params.curation.templates.api_key_env, params.curation.captioning.api_key_env)
    return tuple(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class Redactor:
    """Replaces known secret values in strings with ``[REDACTED]``.

    Attributes:
        secrets: ``(environment variable name, its value)`` pairs, longest value first.
    """

    secrets: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, names: Iterable[str], environ: Mapping[str, str] | None = None) -> "Redactor":
        """A redactor for the current values of the environment variables ``names``.

        Args:
            names: environment variable names.
            environ: the environment to read (default: ``os.environ``).

        Returns:
            The redactor; unset, empty or very short values are ignored.
        """
        environ = os.environ if environ is None else environ
        pairs = [(n, environ.get(n, "")) for n in names]
        kept = [(n, v) for n, v in pairs if len(v.strip()) >= MIN_SECRET_LENGTH]
        return cls(tuple(sorted(kept, key=lambda p: -len(p[1]))))

    @classmethod
    def from_params(cls, params: Params) -> "Redactor":
        """A redactor for the secrets params.yaml names (see :func:`secret_env_names`).

        Args:
            params: the run's parameters.

        Returns:
            The redactor.
        """
        return cls.from_env(secret_env_names(params))

    def redact(self, text: str, where: str = "value") -> str:
        """``text`` with every secret value replaced by ``[REDACTED]``.

        Args:
            text: what is about to be logged.
            where: what it is (e.g. ``param model.x``), named in the warning.

        Returns:
            The safe text (unchanged when it holds no secret).
        """
        for name, value in self.secrets:
            if value in text:
                logger.warning("%s held the value of $%s; logged it redacted", where, name)
                text = text.replace(value, REDACTED)
        return text

    def redact_mapping(self, values: Mapping[str, str], kind: str) -> dict[str, str]:
        """Redact every value of a mapping (parameters or tags).

        Args:
            values: name -> string value.
            kind: ``param`` or ``tag``, for the warning.

        Returns:
            A new mapping with safe values.
        """
        return {key: self.redact(value, f"{kind} {key}") for key, value in values.items()}
