"""Fixtures: ablation parameters at the tiniest scale, every output (corpora, base, runs, MLflow) in tmp_path."""

from pathlib import Path

import pytest

from gadms.config import Params, params_from_dict


def tiny_params(tmp: Path, **sections) -> Params:
    """Two rows x two seeds, 8-identity corpora, one epoch of everything; outputs and the MLflow store in ``tmp``."""
    raw: dict = {
        "paths": {"mlruns_dir": str(tmp / "mlruns")},
        "tracking": {"experiment": "ablate-test"},
        "model": {"context_length": 32},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "warmup_epochs": 0},
        "synth": {"max_images_per_identity": 2},
        "ablate": {
            "rows": ["none", "gass"],
            "seeds": [0, 1],
            "out_dir": str(tmp / "ablate"),
            "corpus": {"identities": 8, "seed": 1, "caption_noise": 0.5},
            "held_out": {"identities": 8, "seed": 2},
            "base": {
                "epochs": 1,
                "cache_dir": str(tmp / "base"),
                "corpus": {"identities": 8, "seed": 3, "caption_noise": 0.0},
            },
        },
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return params_from_dict(raw, "tiny ablate params")


@pytest.fixture(autouse=True)
def _no_env_store(monkeypatch):
    """The store comes from the params (tmp_path), never from the shell."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
