"""Caption quality gate (SPEC 4): Great Expectations checks a curated corpus before it is versioned or trained on.

Modules: ``vocabulary`` (word lists and their regexes), ``corpus`` (the shards
as a caption table and a crop table, plus the fingerprint), ``suite`` (the GX
suites, Data Docs; imports Great Expectations, so it is loaded only when the
gate runs), ``results`` (result and error types) and ``gate`` (run the gate,
write its reports, require that it passed).
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
