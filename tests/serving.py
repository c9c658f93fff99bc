"""Waiting for a `gadms serve` a test started."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest


def wait_until_served(proc: subprocess.Popen, base: str, log: Path, seconds: float = 60) -> None:
    """Return once ``base/api/info`` answers 200; fail the test when the server exits or takes over ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/api/info", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"gadms serve exited: {log.read_text(errors='replace')}")
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"gadms serve did not answer within {seconds:g} s")
