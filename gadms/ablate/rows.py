"""The ablation rows (the paper's Table 4) as parameter overrides.

A row is a name and the ``--set`` overrides that make it. Masking scores: ``model.masking.score`` (``none``
masks nothing, so MTP has no targets either); MTP on/off: ``loss.mtp.enabled``; the GASS formulas:
``model.gass.variant``. ``gass-official`` is the released code's whole masking setting (issue 22): its formulas,
slope 20, midpoints 0.9 (noise, on 1 - s) and 0.1 (informative, on s), and at least one masked token in both
captions. ``clean`` is ``none`` trained on the corpus without its wrong words (the same images and identities):
the upper bound, against which ``none`` on the noisy corpus is the lower one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from gadms.config import Params, apply_overrides, params_from_dict

ROWS: dict[str, tuple[str, ...]] = {
    "none": ("model.masking.score=none", "loss.mtp.enabled=false"),  # SDM (+ITC) only: no masking, no MTP
    "random": ("model.masking.score=random", "loss.mtp.enabled=true"),  # dual masking by random scores
    "cosine": ("model.masking.score=cosine", "loss.mtp.enabled=true"),  # the CSS baseline
    "gass": ("model.masking.score=gass", "model.gass.variant=paper", "loss.mtp.enabled=true"),
    "gass-official": (
        "model.masking.score=gass",
        "model.gass.variant=official",
        "model.masking.slope=20",
        "model.masking.noise_midpoint=0.9",
        "model.masking.informative_midpoint=0.1",
        "model.masking.mtp_at_least_one=true",
        "model.masking.noise_at_least_one=true",
        "loss.mtp.enabled=true",
    ),
    "gass-no-mtp": ("model.masking.score=gass", "model.gass.variant=paper", "loss.mtp.enabled=false"),
    "random-no-mtp": ("model.masking.score=random", "loss.mtp.enabled=false"),
    # the upper bound: no masking on the same corpus with every caption clean (gadms.ablate.cells.CLEAN_ROW)
    "clean": ("model.masking.score=none", "loss.mtp.enabled=false"),
}

DESCRIPTIONS = {
    "none": "no masking, no MTP",
    "random": "random scores, dual masking + MTP",
    "cosine": "cosine (CSS) scores, dual masking + MTP",
    "gass": "GASS (paper formulas), dual masking + MTP",
    "gass-official": "GASS (official code's formulas, slope 20, midpoints 0.9/0.1, >= 1 mask), dual masking + MTP",
    "gass-no-mtp": "GASS (paper), noise masking only",
    "random-no-mtp": "random scores, noise masking only",
    "clean": "no masking, no MTP, on the corpus without its wrong words (upper bound)",
}


def derive(params: Params, overrides: Sequence[str], source: str) -> Params:
    """``params`` with ``section.key=value`` overrides applied and validated again.

    Args:
        params: the starting parameters.
        overrides: ``--set``-style strings.
        source: what the overrides are, for error messages (e.g. ``ablate row gass``).

    Returns:
        The new parameters.
    """
    return params_from_dict(apply_overrides(params.model_dump(mode="json"), overrides), source)


def row_params(params: Params, row: str, seed: int, pretrained: str | None, extra: Sequence[str] = ()) -> Params:
    """The parameters of one (row, seed) cell.

    Args:
        params: the ablation's parameters (training settings of every row).
        row: a key of :data:`ROWS`.
        seed: the cell's seed (weights of the new layers, masks, batch order, augmentation).
        pretrained: the base weights every row starts from (``model.pretrained``), or None.
        extra: the row's calibrated overrides (``gadms.ablate.calibrate``), applied last.

    Returns:
        The cell's parameters.
    """
    sets = [*ROWS[row], *extra, f"seed={seed}"]
    if pretrained is not None:
        sets.append(f"model.pretrained={json.dumps(pretrained)}")
    return derive(params, sets, f"ablate row {row}")


def digest(value: Any) -> str:
    """A stable SHA-256 hex digest of a JSON-able value (parameters dumped first)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def result_shaping(params: Params) -> dict[str, Any]:
    """The parameters that decide a training result (paths, tracking, orchestration and the ablate plan left out)."""
    dump = params.model_dump(mode="json")
    for key in ("paths", "tracking", "orchestration", "versioning", "pipeline", "curation", "validation", "ablate"):
        dump.pop(key, None)
    return dump
