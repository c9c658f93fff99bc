"""Pre-training with ``score_timing: previous_epoch`` on the node's score store ends where the former dict did.

The reference is the former per-rank dict (``ReferenceScoreMemory``, kept in the model tests) plugged into
the same trainer; the store must give the same weights bit for bit, straight, resumed mid-epoch from its
checkpoint copy, and resumed from an old checkpoint that pickled the dict's rows.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _common import pairs

import gadms.model.step as step_module
from gadms.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig
from gadms.data.pipeline import PairDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.score_memory import COPY_PREFIX, store_path
from gadms.train.loop import CHECKPOINT, Trainer
from gadms.train.settings import RunSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "model"))
from test_score_memory import ReferenceScoreMemory  # noqa: E402

CFG = ModelConfig(context_length=32, masking={"score_timing": "previous_epoch"})
WORKER = Path(__file__).with_name("_ddp_scores_worker.py")


class _DictMemory(ReferenceScoreMemory):
    """The former dict memory behind the trainer's store interface: checkpoints pickle its rows, as before."""

    is_open = True

    def __init__(self, initial_score: float = 0.85, width: int = 77):
        super().__init__(initial_score)

    def save_copy(self, directory: Path) -> dict:
        return self.state_dict()

    def remove(self) -> None:
        pass


def _fit(out: Path, pairs, resume: bool = False, stop_after_steps=None) -> PersonRetrievalModel:
    """3 epochs of 2 steps on 16 pairs, a checkpoint after every step."""
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(CFG))
    dataset = PairDataset(pairs, image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    optimizer = OptimizerConfig(lr=1e-4, eps=1e-3)
    run = RunSettings("gadms", 3, 8, optimizer, warmup_epochs=1, checkpoint_every_steps=1)
    trainer = Trainer(model, dataset, run, CFG, LossConfig(itc={"enabled": False}), out, "cpu", progress=False)
    trainer.fit(resume=resume, stop_after_steps=stop_after_steps)
    return model


def _assert_same_weights(a: PersonRetrievalModel, b: PersonRetrievalModel) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.slow
def test_store_training_equals_the_dict_memory_straight_resumed_and_from_old_checkpoints(
    tmp_path, synth_pairs, monkeypatch
):
    pairs = synth_pairs[:16]
    with monkeypatch.context() as patch:
        patch.setattr(step_module, "ScoreMemory", _DictMemory)
        reference = _fit(tmp_path / "dict", pairs)
        _fit(tmp_path / "old", pairs, stop_after_steps=3)  # killed in epoch 2: a checkpoint holding dict rows
    old = torch.load(tmp_path / "old" / CHECKPOINT, weights_only=True)
    assert (old["epoch"], old["batch"]) == (1, 1) and "settled" in old["score_memory"]

    straight = _fit(tmp_path / "store", pairs)
    _assert_same_weights(reference, straight)
    entry = torch.load(tmp_path / "store" / CHECKPOINT, weights_only=True)["score_memory"]
    assert set(entry) == {"file", "bytes", "sha256", "captions", "width"} and entry["captions"] == 16
    assert [p.name for p in (tmp_path / "store").glob(f"{COPY_PREFIX}*")] == [entry["file"]]
    assert not store_path(tmp_path / "store").exists()  # removed at the end of training

    _fit(tmp_path / "killed", pairs, stop_after_steps=3)
    _assert_same_weights(reference, _fit(tmp_path / "killed", pairs, resume=True))
    _assert_same_weights(reference, _fit(tmp_path / "old", pairs, resume=True))  # old rows converted

    fresh_cfg = ModelConfig(context_length=32)  # the check can fail: other timing, other weights
    torch.manual_seed(0)
    other = PersonRetrievalModel(Architecture.from_config(fresh_cfg))
    dataset = PairDataset(pairs, image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    run = RunSettings("gadms", 3, 8, OptimizerConfig(lr=1e-4, eps=1e-3), warmup_epochs=1)
    Trainer(other, dataset, run, fresh_cfg, LossConfig(itc={"enabled": False}), tmp_path / "f", "cpu", False).fit()
    assert not torch.equal(other.clip.text_projection, reference.clip.text_projection)


@pytest.mark.slow
def test_a_changed_store_copy_stops_the_resume_with_one_line(tmp_path, synth_pairs):
    from gadms.model.files import ModelFileError

    pairs = synth_pairs[:16]
    out = tmp_path / "run"
    _fit(out, pairs, stop_after_steps=1)
    entry = torch.load(out / CHECKPOINT, weights_only=True)["score_memory"]
    copy = out / entry["file"]
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ModelFileError, match="entry 'score_memory' does not fit this run.*SHA-256 differs") as err:
        _fit(out, pairs, resume=True)
    assert "\n" not in str(err.value)
    assert not store_path(out).exists()


@pytest.mark.slow
def test_two_gloo_ranks_read_the_same_scores_as_one_dict_fed_the_gathered_rows(tmp_path):
    pairs(tmp_path)  # the benchmark, written once before the ranks start
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["store"] == ranks[1]["store"] and not Path(ranks[0]["store"]).exists()  # one file, removed
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name
    stores = [r["calls"] for r in ranks]
    readback = 0
    for r, rank in enumerate(ranks):
        reference = ReferenceScoreMemory(0.85)
        for k, (epoch, ids, tokens, used, keys, rows) in enumerate(rank["calls"]):
            other = stores[1 - r][k]
            assert torch.equal(keys, other[4]) and torch.equal(rows, other[5])  # both ranks write the same rows
            reference.start_epoch(epoch)
            assert torch.equal(used, reference.lookup(ids, tokens)), f"rank {r}, step {k}"
            reference.store(keys, rows)
            readback += int(epoch > 0)
    assert readback and len(ranks[0]["calls"]) == len(ranks[1]["calls"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"file": "../elsewhere.bin", "bytes": 10, "sha256": "ab"}, "the name, size and sha256 of the score store's"),
        ({"file": "checkpoint.scores.x.bin", "bytes": -1, "sha256": "ab"}, "the name, size and sha256"),
        (
            {"epoch": 1, "settled": {"indices": [1]}, "fresh": {}},
            "the score store.s copy, or an epoch and settled/fresh",
        ),
    ],
)
def test_a_malformed_score_memory_entry_is_one_line(tmp_path, entry, message):
    from gadms.model.files import ModelFileError
    from gadms.train.checkpoint_checks import checked_checkpoint

    state = {"epoch": 0, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "architecture": "{}"}
    with pytest.raises(ModelFileError, match=f"checkpoint entry 'score_memory' must hold {message}") as err:
        checked_checkpoint({**state, "score_memory": entry}, tmp_path / CHECKPOINT)
    assert "\n" not in str(err.value)
    old = {"epoch": 1, "settled": {"indices": torch.zeros(0), "scores": torch.zeros(0, 0)}}
    assert checked_checkpoint({**state, "score_memory": {**old, "fresh": old["settled"]}}, tmp_path / CHECKPOINT)
