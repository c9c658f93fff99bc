"""Suite-wide set-up: the tools' usage reporting stays off (only loopback traffic in tests)."""

import os

from gadms.cli import NO_TELEMETRY


def pytest_configure(config):
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
