"""Credentials written into values: the password of a URL (``http://user:KEY@host``) and secret query parameters
(``?api_key=KEY``, ``&token=KEY``, ...).

Only the secret part counts (the user name, host and path stay readable). This module imports nothing from
``gadms``, so the parameter schema can use it to refuse credentials in names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# scheme://user:PASSWORD@ - the password is what is hidden; a bare user (ssh://git@host) is not a secret.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:)(?P<secret>[^/?#@\s]+)(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|password|passwd|secret|sig|signature)=)"
    r"(?P<secret>[^&#;\s]+)",
    re.IGNORECASE,
)
PATTERNS = ((_URL_PASSWORD, "a password in a URL"), (_QUERY_SECRET, "a secret URL query parameter"))


def find_credential(text: str) -> str | None:
    """What kind of credential ``text`` holds, if any.

    Args:
        text: a value (a URL, a name, an override).

    Returns:
        ``"a password in a URL"`` or ``"a secret URL query parameter"``; None when there is none.
    """
    for pattern, kind in PATTERNS:
        if pattern.search(text):
            return kind
    return None


def replace_credentials(text: str, replace: Callable[[str], str]) -> str:
    """``text`` with each credential replaced by ``replace(credential)``.

    Args:
        text: a value.
        replace: maps the secret part to what stands in for it.

    Returns:
        The new text (unchanged when it holds no credential).
    """
    for pattern, _ in PATTERNS:
        text = pattern.sub(lambda m: m.group("head") + replace(m.group("secret")), text)
    return text
