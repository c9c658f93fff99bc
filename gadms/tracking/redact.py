"""Keep API keys out of what is logged to MLflow and of what the flows pass to Prefect.

params.yaml names the environment variables that hold the curation services'
keys (``curation.templates.api_key_env``, ``curation.captioning.api_key_env``),
never the keys. A :class:`Redactor` reads those variables once and replaces
any occurrence of their values in a parameter, tag or text before it is
logged (a URL with an embedded key, an error message quoting a header, ...);
it also replaces every credential written into a URL (see
:mod:`gadms.credentials`).

Prefect stores flow-run parameters in its database and shows them in its UI,
so ``--set`` overrides never reach it in clear: :func:`hide_override_secrets`
moves each credential of an override into an environment variable of this
process (``GADMS_SET_SECRET_1``, ...; child processes, such as the flow runs
of a served deployment, inherit it) and leaves ``[REDACTED:GADMS_SET_SECRET_1]``
in its place; :func:`reveal_override_secrets` puts the value back where the
flow loads its parameters.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from gadms.config import Params
from gadms.credentials import find_credential, replace_credentials

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
SET_SECRET_PREFIX = "GADMS_SET_SECRET_"
_PLACEHOLDER = re.compile(r"\[REDACTED:(" + SET_SECRET_PREFIX + r"[0-9]+)\]")
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
        kind = find_credential(text)
        safe = redact_credentials(text) if kind else text
        if safe != text:
            logger.warning("%s held %s; logged it redacted", where, kind)
        return safe

    def refuse_in_name(self, name: str, where: str) -> None:
        """Refuse a name (experiment, registered model, alias) that holds a secret: names are shown to everyone.

        Args:
            name: the name.
            where: the parameter it comes from, e.g. ``tracking.experiment``.

        Raises:
            ValueError: one line naming the parameter and the environment variable, never the value.
        """
        for env, value in self.secrets:
            if value in name:
                raise ValueError(f"{where} holds the value of ${env}; a name must not contain a secret")
        kind = find_credential(name)
        if kind:
            raise ValueError(f"{where} holds {kind}; a name must not contain a secret")

    def redact_mapping(self, values: Mapping[str, str], kind: str) -> dict[str, str]:
        """Redact every value of a mapping (parameters or tags).

        Args:
            values: name -> string value.
            kind: ``param`` or ``tag``, for the warning.

        Returns:
            A new mapping with safe values.
        """
        return {key: self.redact(value, f"{kind} {key}") for key, value in values.items()}


def redact_credentials(text: str) -> str:
    """``text`` with each credential that is not already a stand-in replaced by ``[REDACTED]``."""
    return replace_credentials(text, lambda secret: secret if _is_hidden(secret) else REDACTED)


def _is_hidden(secret: str) -> bool:
    """Whether a credential is already a stand-in (``[REDACTED]`` or a placeholder)."""
    return secret == REDACTED or _PLACEHOLDER.fullmatch(secret) is not None


def hide_override_secrets(overrides: Sequence[str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Overrides safe to hand to Prefect: each credential moved into an environment variable of this process.

    The same secret gets the same variable; numbering follows the order of appearance, so the same command line
    gives the same overrides (and the same stage cache keys).

    Args:
        overrides: ``section.key=value`` strings as given with ``--set``.
        environ: where the secrets go (default: ``os.environ``).

    Returns:
        The overrides with ``[REDACTED:GADMS_SET_SECRET_<n>]`` in place of each credential.
    """
    environ = os.environ if environ is None else environ
    names: dict[str, str] = {}

    def stand_in(secret: str) -> str:
        if _is_hidden(secret):
            return secret
        if secret not in names:
            names[secret] = f"{SET_SECRET_PREFIX}{len(names) + 1}"
            environ[names[secret]] = secret
        return f"[REDACTED:{names[secret]}]"

    return [replace_credentials(text, stand_in) for text in overrides]


def reveal_override_secrets(overrides: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """The overrides with each ``[REDACTED:GADMS_SET_SECRET_<n>]`` replaced by the variable's value.

    Args:
        overrides: overrides made by :func:`hide_override_secrets` (others pass through unchanged).
        environ: where the secrets are (default: ``os.environ``).

    Returns:
        The overrides as the user gave them.

    Raises:
        ValueError: a placeholder's variable is not set in this process (one line, naming the key and variable).
    """
    environ = os.environ if environ is None else environ

    def value(match: re.Match[str], text: str) -> str:
        if match.group(1) not in environ:
            key = text.partition("=")[0]
            raise ValueError(
                f"--set {key}: its credential was kept in ${match.group(1)}, which is not set here; "
                "run with the same --set, or name the key's environment variable in params.yaml"
            )
        return environ[match.group(1)]

    return [_PLACEHOLDER.sub(lambda m: value(m, text), text) for text in overrides]
