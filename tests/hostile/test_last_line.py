"""The last line of defence: an exception no command expected gives one line, a log file and exit status 70."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gadms.data.stats
from gadms.crash import EXIT_INTERRUPTED, EXIT_UNEXPECTED, log_dir

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^gadms data stats: unexpected error: RuntimeError: disk on fire \(traceback in (?P<log>\S+)\)$")


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("disk on fire\nsecond line of the message")


def test_an_unexpected_exception_is_one_line_and_a_logged_traceback(monkeypatch, run_gadms, state_home, tmp_path):
    monkeypatch.setattr(gadms.data.stats, "dataset_stats", _boom)
    outcome = run_gadms("data", "stats", "cuhk-pedes", "--root", str(tmp_path))
    assert outcome.code == EXIT_UNEXPECTED == 70
    assert outcome.stdout == "" and outcome.stderr.endswith("\n")
    match = LINE.match(outcome.stderr.rstrip("\n"))
    assert match, outcome.stderr
    log = Path(match["log"])
    assert log.parent == state_home / "gadms" / "logs" and log.stat().st_mode & 0o077 == 0
    text = log.read_text()
    assert text.startswith("gadms data stats\n") and "Traceback (most recent call last)" in text
    assert "in _boom" in text and "second line of the message" in text


def test_each_failure_gets_its_own_log(monkeypatch, run_gadms, tmp_path):
    monkeypatch.setattr(gadms.data.stats, "dataset_stats", _boom)
    runs = [run_gadms("data", "stats", "curated", "--root", str(tmp_path)) for _ in range(2)]
    logs = [Path(LINE.match(r.stderr.rstrip("\n"))["log"]) for r in runs]  # type: ignore[index]
    assert logs[0] != logs[1] and all("Traceback" in log.read_text() for log in logs)


def test_the_temp_folder_takes_the_log_when_the_state_folder_is_not_writable(monkeypatch, run_gadms, tmp_path):
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state folder should be")
    monkeypatch.setattr(gadms.data.stats, "dataset_stats", _boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    outcome = run_gadms("data", "stats", "curated", "--root", str(tmp_path), env={"XDG_STATE_HOME": str(blocked)})
    log = Path(LINE.match(outcome.stderr.rstrip("\n"))["log"])  # type: ignore[index]
    assert outcome.code == 70 and log.parent == tmp_path / "tmp" and "Traceback" in log.read_text()


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, run_gadms, tmp_path):
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gadms.data.stats, "dataset_stats", interrupt)
    outcome = run_gadms("data", "stats", "curated", "--root", str(tmp_path))
    assert (outcome.code, outcome.stderr) == (EXIT_INTERRUPTED, "interrupted\n")


def test_user_errors_and_usage_errors_keep_their_status(run_gadms, tmp_path):
    missing = run_gadms("data", "stats", "curated", "--root", str(tmp_path / "absent"))
    assert missing.code == 2 and missing.stderr.startswith("error: ")
    for usage in (run_gadms("data", "stats"), run_gadms("params", "show", "--bogus")):
        assert usage.code == 2 and usage.stderr.startswith("error: ") and len(usage.stderr.splitlines()) == 1
    assert "No such option: --bogus (see 'gadms params show --help')" in usage.stderr
    assert run_gadms("--help").code == 0


def test_python_dash_m_gadms_has_the_same_defence(tmp_path):
    """``python -m gadms`` (how torchrun starts each rank) goes through the same entry point."""
    script = (
        "import runpy, sys, gadms.data.stats as s\n"
        "def boom(*a, **k): raise RuntimeError('disk on fire')\n"
        "s.dataset_stats = boom\n"
        f"sys.argv = ['gadms', 'data', 'stats', 'curated', '--root', {str(tmp_path)!r}]\n"
        "runpy.run_module('gadms', run_name='__main__')\n"
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 70 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and LINE.match(done.stderr.rstrip("\n")), done.stderr
    logs = list(log_dir({"XDG_STATE_HOME": str(tmp_path / "state")}).iterdir())
    assert len(logs) == 1 and re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d+\.log", logs[0].name)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/u"}, "/srv/state/gadms/logs"),
        ({"XDG_STATE_HOME": "relative/ignored", "HOME": "/home/u"}, "/home/u/.local/state/gadms/logs"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/gadms/logs"),
    ],
)
def test_the_log_folder_follows_the_xdg_rules(environ, expected):
    assert log_dir(environ) == Path(expected)


def test_help_documents_the_exit_statuses(run_gadms):
    text = " ".join(run_gadms("--help", env={"COLUMNS": "200"}).stdout.split())
    for status in ("0 done", "1 the quality gate", "2 a user error", "70 an unexpected failure", "130 interrupted"):
        assert status in text


def test_python_dash_m_gadms_reports_a_failed_import_in_one_line(tmp_path):
    script = (
        "import runpy, sys\n"
        "sys.modules['gadms.cli.data'] = None  # importing gadms.cli now fails\n"
        "sys.argv = ['gadms', 'params', 'show']\n"
        "runpy.run_module('gadms', run_name='__main__')\n"
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 70 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("gadms: unexpected error: ModuleNotFoundError: ")


def test_the_line_carries_no_terminal_escapes_from_the_message(monkeypatch, run_gadms, tmp_path):
    def escape(*args: object, **kwargs: object) -> None:
        raise RuntimeError("\x1b[2J\x1b]0;owned\x07bad\rvalue")

    monkeypatch.setattr(gadms.data.stats, "dataset_stats", escape)
    outcome = run_gadms("data", "stats", "curated", "--root", str(tmp_path))
    assert outcome.code == 70 and "\x1b" not in outcome.stderr and "\r" not in outcome.stderr
    assert "RuntimeError: ?[2J?]0;owned?bad" in outcome.stderr
