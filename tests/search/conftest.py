"""Fixtures: the tiny model (two different seeded weights) saved as safetensors, a small synthetic benchmark."""

from pathlib import Path

import pytest
import torch

from gadms.config import ModelConfig, SynthConfig
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.synth.benchmark import write_benchmark


def _saved_model(directory: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()
    return save_model(model, directory / "model.safetensors")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """The tiny model with seed-0 weights, as ``RUN/model.safetensors``."""
    return _saved_model(tmp_path_factory.mktemp("run"), 0)


@pytest.fixture(scope="session")
def other_model_file(tmp_path_factory) -> Path:
    """The same architecture with other (seed-1) weights."""
    return _saved_model(tmp_path_factory.mktemp("other"), 1)


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory) -> Path:
    """A synthetic CUHK-PEDES-format benchmark with 30 identities (16 test images)."""
    out = tmp_path_factory.mktemp("bench")
    write_benchmark(out, 30, 0, SynthConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def image_dir(bench_root) -> Path:
    """The benchmark's image folder (images in a sub-folder: read recursively)."""
    return bench_root / "CUHK-PEDES" / "imgs"
