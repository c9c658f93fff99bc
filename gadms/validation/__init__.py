"""Caption quality gate (SPEC 4): Great Expectations checks a curated corpus before it is versioned or trained on.

Modules: ``vocabulary`` (word lists and their regexes), ``corpus`` (the shards
streamed as batches of caption and crop rows, plus the fingerprint),
``combine`` (per-batch results summed into the corpus's per-check results),
``duplicates`` (exact duplicate captions with bounded memory: hashes spilled to
disk, counted partition by partition), ``suite`` (the GX suites run per batch,
Data Docs; imports Great Expectations, so it is loaded only when the gate
runs), ``results`` (result and error types), ``report`` (the offline HTML
report) and ``gate`` (run the gate, write its reports, require that it passed).
"""

from gadms.validation.gate import read_gate, require_passed_gate, run_quality_gate
from gadms.validation.results import CheckResult, GateError, GateFailed, GateResult

__all__ = [
    "CheckResult",
    "GateError",
    "GateFailed",
    "GateResult",
    "read_gate",
    "require_passed_gate",
    "run_quality_gate",
]
