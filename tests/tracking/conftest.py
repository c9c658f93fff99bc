"""Fixtures: one real local MLflow store (SQLite + artifact folder) per session, a fresh experiment and
registered model name per test, the tiny model with seeded random weights, a tiny synthetic benchmark."""

import uuid

import pytest
import torch

from gadms.config import ModelConfig, Params, SynthConfig, params_from_dict
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.synth.benchmark import write_benchmark

SECRET_ENVS = ("GADMS_LLM_API_KEY", "GADMS_VLM_API_KEY")


@pytest.fixture(scope="module", autouse=True)
def _clean_env():
    """Tests choose the store through params; no tracking URI or API key leaks in from the shell."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", *SECRET_ENVS):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory):
    """The local store's directory (paths.mlruns_dir); created once, its database migrated once."""
    return tmp_path_factory.mktemp("mlruns")


def make_params(store_dir, **sections) -> Params:
    """Params on the session store with a fresh experiment and registered model name."""
    tag = uuid.uuid4().hex[:8]
    raw = {
        "paths": {"mlruns_dir": str(store_dir)},
        "tracking": {"experiment": f"exp-{tag}", "registered_model": f"model-{tag}"},
        "model": {"context_length": 32},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return params_from_dict(raw)


@pytest.fixture()
def params(store_dir) -> Params:
    return make_params(store_dir)


@pytest.fixture(scope="session")
def new_params(store_dir):
    """Make more params on the session store: ``new_params(section={key: value})``."""
    return lambda **sections: make_params(store_dir, **sections)


@pytest.fixture(scope="session")
def tiny_model() -> PersonRetrievalModel:
    torch.manual_seed(0)
    return PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory):
    """A small synthetic CUHK-PEDES-format benchmark (its parent directory)."""
    out = tmp_path_factory.mktemp("bench")
    write_benchmark(out, 12, 0, SynthConfig(), progress=False)
    return out
