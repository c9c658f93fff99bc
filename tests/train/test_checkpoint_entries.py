"""Resuming from a checkpoint.pt whose entries have the wrong type or do not fit the run: one line naming the
file and the entry (a ModelFileError, ``error: ...`` exit 2 from the CLI), never a traceback."""

import re

import pytest
import torch
from _common import MODEL, pairs
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import AugmentConfig, LossConfig, OptimizerConfig
from gadms.data.pipeline import PairDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.model.files import ModelFileError
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.train.loop import CHECKPOINT, Trainer
from gadms.train.settings import RunSettings


def _trainer(out) -> Trainer:
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(MODEL))
    dataset = PairDataset(pairs(out.parent)[:24], image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    settings = RunSettings("sdm", 1, 8, OptimizerConfig(lr=1e-4), 0, checkpoint_every_steps=1)
    loss = LossConfig(itc={"enabled": False}, mtp={"enabled": False})
    return Trainer(model, dataset, settings, MODEL, loss, out, device="cpu", progress=False)


@pytest.fixture(scope="module")
def good_state(tmp_path_factory) -> dict:
    """A genuine mid-epoch checkpoint (after one optimiser step): optimiser moments, ranks, running sums."""
    out = tmp_path_factory.mktemp("ck") / "run"
    _trainer(out).fit(stop_after_steps=1)
    return torch.load(out / CHECKPOINT, weights_only=True)


def _rank(state: dict, **changes) -> list:
    return [{**state["ranks"][0], **changes}]


CASES = {
    "optimizer_str": (lambda s: {"optimizer": "x"}, r"entry 'optimizer' must be a dict, got a str"),
    "model_list": (lambda s: {"model": [1]}, r"entry 'model' must be a dict, got a list"),
    "ranks_empty": (lambda s: {"ranks": []}, r"entry 'ranks' must be a non-empty list, got an empty list"),
    "ranks_int": (lambda s: {"ranks": 5}, r"entry 'ranks' must be a non-empty list, got an int"),
    "ranks_no_rng": (lambda s: {"ranks": [{"feed": {}}]}, r"entry 'ranks' must hold per process step_generator"),
    "epoch_str": (lambda s: {"epoch": "abc"}, r"entry 'epoch' must be a whole number >= 0, got 'abc'"),
    "epoch_bool": (lambda s: {"epoch": True}, r"entry 'epoch' must be a whole number >= 0, got 'True'"),
    "epoch_negative": (lambda s: {"epoch": -1}, r"entry 'epoch' must be a whole number >= 0, got '-1'"),
    "batch_float": (lambda s: {"batch": 1.5}, r"entry 'batch' must be a whole number >= 0"),
    "partial_missing": (lambda s: {"partial": None}, r"entry 'partial' is not the running sums"),
    "partial_keys": (lambda s: {"partial": {"sums": {}}}, r"entry 'partial' is not the running sums"),
    "optimizer_empty": (lambda s: {"optimizer": {}}, r"entry 'optimizer' does not fit this run \("),
    "torch_rng_short": (
        lambda s: {"ranks": _rank(s, torch_rng=torch.zeros(3, dtype=torch.uint8))},
        r"entry 'torch_rng' does not fit this run \(",
    ),
    "step_generator_float": (
        lambda s: {"ranks": _rank(s, step_generator=torch.zeros(5056))},
        r"entry 'step_generator' does not fit this run \(",
    ),
    "score_memory_str": (lambda s: {"score_memory": "x"}, r"entry 'score_memory' must be a dict, got a str"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_checkpoint_entry_is_one_line_naming_file_and_entry(tmp_path, good_state, case):
    change, match = CASES[case]
    out = tmp_path / "run"
    out.mkdir()
    torch.save({**good_state, **change(good_state)}, out / CHECKPOINT)
    trainer = _trainer(out)
    with pytest.raises(ModelFileError) as info:
        trainer.fit(resume=True)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(f"{out / CHECKPOINT}: checkpoint "), message
    assert re.search(match, message), message


def test_the_genuine_checkpoint_still_resumes_mid_epoch(tmp_path, good_state):
    out = tmp_path / "run"
    out.mkdir()
    torch.save(good_state, out / CHECKPOINT)
    epoch, batch, position, partial = _trainer(out).load_checkpoint()
    assert (epoch, batch, position) == (0, 1, {}) and partial["count"] == 1


def test_cli_resume_from_a_checkpoint_with_a_wrong_entry_is_one_line(tmp_path, good_state):
    pairs(tmp_path)  # writes tmp_path/bench
    out = tmp_path / "run"
    out.mkdir()
    torch.save({**good_state, "optimizer": "x"}, out / CHECKPOINT)
    args = ["train", "pretrain", "--data", str(tmp_path / "bench"), "--format", "cuhk-pedes", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--resume", "--no-track", "--device", "cpu", "--set", "train.num_workers=0"]
    )
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == f"error: {out / CHECKPOINT}: checkpoint entry 'optimizer' must be a dict, got a str", last
