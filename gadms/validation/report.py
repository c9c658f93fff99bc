"""The gate's own HTML report: one self-contained page that works offline, under the project's check names.

Great Expectations' Data Docs fetch their CSS and JavaScript from CDNs and
show each expectation as its raw regex. This page has its style inline and no
external reference at all (no stylesheet, script, font or image URL), and
lists each check by name (``no_speculation``, ...) with what it checks, its
rule in words (thresholds, a few words of its list), pass/fail, the failing
share against the allowed share, and example rows.

Like ``summary.txt`` it holds no timestamp: the same corpus and thresholds give
the same bytes. It is written twice: ``report.html`` (the latest) and
``history/<fingerprint 12>-<thresholds 8>.html``, one per corpus version and
set of thresholds, so the report of every gated corpus is kept.
"""

from __future__ import annotations

import hashlib
import json
from html import escape
from pathlib import Path
from typing import Any

from gadms.config import ValidationConfig
from gadms.reproducible_writes import write_bytes_atomic
from gadms.validation import vocabulary
from gadms.validation.results import CheckResult, GateResult

REPORT_FILE = "report.html"
HISTORY_DIR = "history"
_SHOWN_WORDS = 6
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;color:#1d232b;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;font-weight:600;color:#fff}
.pass{background:#1f7a3d}.fail{background:#b3261e}
table{border-collapse:collapse;width:100%;margin-top:.75rem;font-size:.92rem}
th,td{border-bottom:1px solid #d7dce2;padding:.45rem .6rem;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
.meta{color:#55606e;font-size:.9rem}ul.examples{margin:.25rem 0 0 1.2rem;padding:0}
ul.examples li{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-word}
"""


def _words(words: tuple[str, ...]) -> str:
    """The first words of a list and how many there are."""
    shown = ", ".join(words[:_SHOWN_WORDS])
    return f"{shown}, ... ({len(words)} words and phrases)" if len(words) > _SHOWN_WORDS else shown


def check_rules(cfg: ValidationConfig) -> dict[str, tuple[str, str]]:
    """What each check looks at and its rule in words (with this run's thresholds).

    Args:
        cfg: the gate's thresholds.

    Returns:
        Check name -> ``(what it checks, the rule)``, in check order.
    """
    v = vocabulary
    return {
        "non_empty": ("Every caption has text.", "not empty or blank"),
        "valid_text": ("Printable, valid UTF-8 text.", "no control characters, no U+FFFD from undecodable bytes"),
        "word_count": ("Caption length in words.", f"between {cfg.min_words} and {cfg.max_words} words"),
        "no_speculation": ("Only visually certain details.", f"no hedging word: {_words(v.SPECULATION_WORDS)}"),
        "no_background": ("Only the person, not the scene.", f"no scene word: {_words(v.BACKGROUND_WORDS)}"),
        "mentions_person": ("Names or refers to a person.", f"a person word: {_words(v.PERSON_WORDS)}"),
        "mentions_attribute": (
            "Names a garment, accessory or colour.",
            f"a garment or colour word: {_words(v.GARMENT_WORDS + v.COLOUR_WORDS)}",
        ),
        "no_placeholder": ("No template placeholder left unfilled.", "no [slot] or {slot} left in the text"),
        "duplicates": ("Captions are not copies of each other.", "no exact twin of an earlier caption"),
        "crop_size": ("Person crops are large enough.", f"short side at least {cfg.min_crop_short_side:g} px"),
        "crop_aspect": (
            "Person crops have a standing person's shape.",
            f"width / height between {cfg.min_crop_aspect:g} and {cfg.max_crop_aspect:g}",
        ),
    }


def gate_thresholds(cfg: ValidationConfig) -> dict[str, Any]:
    """The settings that decide the verdict (``batch_captions`` only sets how much is read at once).

    Args:
        cfg: the gate's configuration.

    Returns:
        Its JSON form without ``batch_captions``, as ``gate.json`` records it.
    """
    return cfg.model_dump(mode="json", exclude={"batch_captions"})


def history_name(fingerprint: str, cfg: ValidationConfig) -> str:
    """``<fingerprint 12>-<thresholds 8>.html``: the kept report of this corpus under these thresholds."""
    thresholds = json.dumps(gate_thresholds(cfg), sort_keys=True).encode("utf-8")
    return f"{fingerprint[:12]}-{hashlib.sha256(thresholds).hexdigest()[:8]}.html"


def _percent(share: float) -> str:
    """A share as a percentage, four significant digits (a failure never rounds to 0)."""
    return f"{100.0 * share:.4g}%"


def _check_row(check: CheckResult, what: str, rule: str) -> str:
    """One table row: name, what, rule, failing and allowed share, result, examples."""
    examples = "".join(f"<li>{escape(e)}</li>" for e in check.examples)
    listed = f'<ul class="examples">{examples}</ul>' if examples else ""
    verdict = '<span class="verdict pass">pass</span>' if check.passed else '<span class="verdict fail">FAIL</span>'
    return (
        f"<tr><td><code>{escape(check.name)}</code></td><td>{escape(what)}<br><span class=meta>rule: "
        f"{escape(rule)}</span>{listed}</td><td class=num>{_percent(check.unexpected_share)}</td>"
        f"<td class=num>{_percent(check.allowed_share)}</td><td>{verdict}</td></tr>"
    )


def render_report(result: GateResult, cfg: ValidationConfig, data_dir: Path, shards: int) -> str:
    """The report page.

    Args:
        result: the gate's verdict and per-check results.
        cfg: its thresholds.
        data_dir: the corpus checked.
        shards: how many shards it has.

    Returns:
        The HTML text (UTF-8, self-contained).
    """
    rules = check_rules(cfg)
    failed = result.failed_checks
    verdict = "PASSED" if result.passed else f"FAILED ({', '.join(failed)})"
    rows = "\n".join(_check_row(c, *rules.get(c.name, ("", ""))) for c in result.checks)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Caption quality gate: {escape(verdict)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Caption quality gate <span class="verdict {"pass" if result.passed else "fail"}">{escape(verdict)}</span></h1>
<p class="meta">corpus <code>{escape(str(data_dir))}</code>: {shards} shards, {result.samples} samples,
{result.captions} captions<br>fingerprint sha256 <code>{escape(result.fingerprint)}</code></p>
<h2>Checks</h2>
<p class="meta">A check fails when the share of failing rows (captions; crops for crop_size and crop_aspect)
is above the allowed share (validation.mostly in params.yaml). Examples: up to three failing rows each, as
shard/sample: caption.</p>
<table><thead><tr><th>check</th><th>what it checks</th><th>failing</th><th>allowed</th><th>result</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def write_report(result: GateResult, cfg: ValidationConfig, data_dir: Path, shards: int, report_dir: Path) -> Path:
    """Write ``report.html`` and its kept copy under ``history/`` (each atomically).

    Args:
        result: the gate's verdict.
        cfg: its thresholds.
        data_dir: the corpus checked.
        shards: its number of shards.
        report_dir: the gate's report folder.

    Returns:
        The kept copy's path (``history/<fingerprint>-<thresholds>.html``).
    """
    page = render_report(result, cfg, data_dir, shards).encode("utf-8")
    kept = Path(report_dir) / HISTORY_DIR / history_name(result.fingerprint, cfg)
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(kept, page)
    write_bytes_atomic(Path(report_dir) / REPORT_FILE, page)
    return kept
