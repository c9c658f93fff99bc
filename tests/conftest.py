"""Suite-wide set-up: the tools' usage reporting stays off (only loopback traffic in tests)."""

import os

import pytest

from gadms.cli import NO_TELEMETRY


def pytest_configure(config):
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)


@pytest.fixture(autouse=True)
def _readers_caps_stay_with_their_test(monkeypatch):
    """A command run in-process sets the readers' caps from its parameters (gadms.safe_files.use_limits):
    they end with the test that ran it."""
    from gadms.file_rules import FILE_BYTES_VARIABLE, IMAGE_PIXELS_VARIABLE

    for variable in (FILE_BYTES_VARIABLE, IMAGE_PIXELS_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
