"""Print shell ``export`` lines that give uv the package sources pip is configured with (used by ``make install``).

uv reads no pip configuration, so without this it would miss what pip finds on this machine: ``find-links``
folders, extra indexes (torch 2.14.1 may lie on local disk only), a constraints file, a CA bundle, a timeout.
The effective values come from ``pip config list`` (files merged) and the ``PIP_*`` environment, which wins
as it does for pip. uv is told to pick the best version across all indexes, as pip does. A ``UV_*`` variable
already set is left as it is.

    eval "$(.venv/bin/python scripts/uv_env.py)"
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

# pip option -> (uv variable, separator uv expects between several values)
OPTIONS = {
    "index-url": ("UV_INDEX_URL", " "),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
    "cert": ("SSL_CERT_FILE", " "),
    "default-timeout": ("UV_HTTP_TIMEOUT", " "),
}


def pip_config() -> dict[str, str]:
    """pip's effective option values, e.g. ``{"find-links": "/opt/wheels"}``: ``PIP_*`` over ``install.*`` over
    ``global.*`` (``pip config list`` shows the files merged and the environment as ``:env:``)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    scopes: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        scope, _, option = key.rpartition(".")
        if option in OPTIONS and scope in (":env:", "install", "global"):
            scopes.setdefault(option, {})[scope] = value.strip().strip("'\"")
    found = {option: by.get(":env:") or by.get("install") or by.get("global") or "" for option, by in scopes.items()}
    return {option: value for option, value in found.items() if value}


def exports(config: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines for the uv variables not already set."""
    lines = []
    for option, value in sorted(config.items()):
        name, separator = OPTIONS[option]
        if name not in os.environ:
            lines.append(f"export {name}={shlex.quote(separator.join(value.split()))}")
    if "UV_INDEX_STRATEGY" not in os.environ:
        lines.append("export UV_INDEX_STRATEGY=unsafe-best-match")  # pip's rule: the best version of any index
    return lines


if __name__ == "__main__":
    print("\n".join(exports(pip_config())))
