"""``make install`` hands uv the package sources pip is configured with (scripts/uv_env.py)."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "uv_env.py"


def _exports(**env: str) -> dict[str, str]:
    """The variables the script exports, run with only ``env`` as pip configuration (no config files)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    shell = {**clean, "PIP_CONFIG_FILE": os.devnull, **env}  # the shell make runs the recipe in
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=shell,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    out = subprocess.run(
        ["bash", "-c", done.stdout + "\nenv -0"], env=shell, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    pairs = (item.partition("=") for item in out.split("\0") if item)
    return {key: value for key, _, value in pairs if key.startswith("UV_") or key == "SSL_CERT_FILE"}


def test_pips_sources_become_uvs():
    exports = _exports(
        PIP_FIND_LINKS="/opt/wheels /srv/more",
        PIP_EXTRA_INDEX_URL="file:///opt/pypi/simple file:///opt/pypi-more/simple",
        PIP_CONSTRAINT="/etc/xdg/pip/constraints.txt",
        PIP_DEFAULT_TIMEOUT="180",
    )
    assert exports["UV_FIND_LINKS"] == "/opt/wheels,/srv/more"
    assert exports["UV_EXTRA_INDEX_URL"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert exports["UV_CONSTRAINT"] == "/etc/xdg/pip/constraints.txt"
    assert exports["UV_HTTP_TIMEOUT"] == "180"
    assert exports["UV_INDEX_STRATEGY"] == "unsafe-best-match"  # pip's rule: the best version of any index
    assert "UV_INDEX_URL" not in exports


def test_a_uv_setting_of_the_user_is_kept():
    exports = _exports(PIP_FIND_LINKS="/opt/wheels", UV_FIND_LINKS="/mine", UV_INDEX_STRATEGY="first-index")
    assert exports["UV_FIND_LINKS"] == "/mine" and exports["UV_INDEX_STRATEGY"] == "first-index"
