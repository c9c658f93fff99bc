"""The score memory in a shared memory-mapped file reads exactly what the former per-rank dict read."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gadms.model.gass import valid_token_mask
from gadms.model.score_memory import (
    COPY_PREFIX,
    ScoreMemory,
    create_store,
    drop_stale_copies,
    prepare_store,
    store_bytes,
    store_path,
)


class ReferenceScoreMemory:
    """The former implementation (a dict per rank), kept here as the reference the store must match."""

    def __init__(self, initial_score: float = 0.85):
        self.initial_score = initial_score
        self.epoch = 0
        self.settled: dict[int, torch.Tensor] = {}
        self.fresh: dict[int, torch.Tensor] = {}

    def start_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.settled.update(self.fresh)
            self.fresh = {}
            self.epoch = epoch

    def lookup(self, indices: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        valid = valid_token_mask(tokens)
        out = torch.full(tokens.shape, self.initial_score, dtype=torch.float32)
        for row, index in enumerate(indices.tolist()):
            stored = self.settled.get(int(index))
            if stored is not None and stored.shape[0] == tokens.shape[1]:
                out[row] = stored.float()
        return out.to(tokens.device) * valid

    def store(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        for index, row in zip(indices.tolist(), scores.detach().cpu().to(torch.float16)):
            self.fresh[int(index)] = row.clone()

    def state_dict(self) -> dict:
        def pack(rows: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
            keys = sorted(rows)
            scores = torch.stack([rows[k] for k in keys]) if keys else torch.zeros(0, 0, dtype=torch.float16)
            return {"indices": torch.tensor(keys, dtype=torch.long), "scores": scores}

        return {"epoch": self.epoch, "settled": pack(self.settled), "fresh": pack(self.fresh)}

    def load_state_dict(self, state: dict) -> None:
        def unpack(packed: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
            return {int(k): row.clone() for k, row in zip(packed["indices"].tolist(), packed["scores"])}

        self.epoch = int(state["epoch"])
        self.settled, self.fresh = unpack(state["settled"]), unpack(state["fresh"])


CAPTIONS, WIDTH = 60, 12


def _tokens(ids: torch.Tensor, width: int = WIDTH) -> torch.Tensor:
    """Tokens whose caption length depends on the caption id: SOT, words, EOT, padding."""
    tokens = torch.zeros(len(ids), width, dtype=torch.long)
    for row, i in enumerate(ids.tolist()):
        n = 1 + i % (width - 2)
        tokens[row, 0], tokens[row, 1 : n + 1], tokens[row, n + 1] = 49406, 400 + i, 49407
    return tokens


def _batches(rng: np.random.Generator, epoch: int) -> list[torch.Tensor]:
    """One epoch's caption ids: a random subset (some captions skip epochs), repeats within and across batches."""
    seen = rng.choice(CAPTIONS, size=int(rng.integers(10, CAPTIONS)), replace=False)
    if epoch == 2:
        seen = seen[seen >= 30]  # captions 0-29 unseen in epoch 3, read again later
    out = []
    for _ in range(int(rng.integers(3, 7))):
        ids = rng.choice(seen, size=8)  # with replacement: repeated captions inside a batch
        out.append(torch.from_numpy(ids.astype(np.int64)))
    return out


def _drive(memories: list, epochs: range, seed: int, on_batch=None) -> list[list[torch.Tensor]]:
    """Feed every memory the same lookups then stores; return each memory's lookups."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    seen: list[list[torch.Tensor]] = [[] for _ in memories]
    for epoch in epochs:
        for b, ids in enumerate(_batches(rng, epoch)):
            tokens = _tokens(ids)
            scores = torch.rand(tokens.shape, generator=g) * valid_token_mask(tokens)
            for k, memory in enumerate(memories):
                memory.start_epoch(epoch)
                seen[k].append(memory.lookup(ids, tokens))
                memory.store(ids, scores)
            if on_batch is not None:
                memories = on_batch(epoch, b, memories)
    return seen


def _assert_same(lookups: list[list[torch.Tensor]]) -> None:
    for k in range(1, len(lookups)):
        assert len(lookups[k]) == len(lookups[0])
        for i, (a, b) in enumerate(zip(lookups[0], lookups[k])):
            assert torch.equal(a, b), f"memory {k}, lookup {i}"


@pytest.fixture()
def shared(tmp_path):
    path = tmp_path / "store.bin"
    create_store(path, CAPTIONS, WIDTH)
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookups_equal_the_dict_reference_over_epochs(shared, seed):
    reference = ReferenceScoreMemory(0.85)
    private = ScoreMemory(0.85, WIDTH)  # never opened: its own growing file
    opened = ScoreMemory(0.85, WIDTH)
    opened.open(shared)
    lookups = _drive([reference, private, opened], range(6), seed)
    _assert_same(lookups)
    stored = [x for x in lookups[0] if ((x != 0) & (x != 0.85)).any()]
    assert len(stored) > 10  # stored scores really came back, not only initial ones


def test_two_ranks_writing_the_same_rows_into_one_file_read_like_the_reference(shared):
    """Two handles on one store (two ranks of a node), both writing every gathered row, interleaved."""
    rank0, rank1 = ScoreMemory(0.5, WIDTH), ScoreMemory(0.5, WIDTH)
    rank0.open(shared)
    rank1.open(shared)
    _assert_same(_drive([ReferenceScoreMemory(0.5), rank0, rank1], range(5), seed=3))
    assert os.path.getsize(shared) == store_bytes(CAPTIONS, WIDTH)  # fixed size, rows in place


def test_resume_mid_epoch_from_a_checkpoint_copy_equals_straight(tmp_path, shared):
    straight = _drive([ReferenceScoreMemory(0.85)], range(5), seed=4)[0]

    def resume(epoch, batch, memories):
        if (epoch, batch) != (2, 1):
            return memories
        reference, memory = memories
        entry = memory.save_copy(tmp_path / "ckpt")
        memory.remove()
        assert not shared.exists()
        prepare_store(shared, CAPTIONS, WIDTH, entry, tmp_path / "ckpt")
        back, state = ScoreMemory(0.85, WIDTH), reference.state_dict()
        back.open(shared)
        again = ReferenceScoreMemory(0.85)
        again.load_state_dict(state)
        return [again, back]

    memory = ScoreMemory(0.85, WIDTH)
    memory.open(shared)
    resumed = _drive([ReferenceScoreMemory(0.85), memory], range(5), seed=4, on_batch=resume)
    _assert_same([straight, *resumed])


def test_old_dict_checkpoint_entry_converts_to_the_same_lookups(tmp_path, shared):
    """An old checkpoint's ``score_memory`` (dict rows, mid-epoch) becomes a store that reads the same."""
    reference = ReferenceScoreMemory(0.85)
    _drive([reference], range(3), seed=5)  # stops inside epoch 3: settled and fresh rows both present
    state = reference.state_dict()
    assert len(state["settled"]["indices"]) and len(state["fresh"]["indices"])
    path = tmp_path / "node.bin"
    prepare_store(path, CAPTIONS, WIDTH, state, tmp_path)
    memory = ScoreMemory(0.85, WIDTH)
    memory.open(path)
    assert memory.epoch == 0  # the epoch comes from the trainer, the rows from the entry
    memory.start_epoch(2)
    again = ReferenceScoreMemory(0.85)
    again.load_state_dict(state)
    _assert_same(_drive([again, memory], range(2, 6), seed=6))


def test_state_dict_has_the_dict_layout_of_the_reference():
    reference, memory = ReferenceScoreMemory(0.85), ScoreMemory(0.85, WIDTH)
    _drive([reference, memory], range(3), seed=7)
    ours, theirs = memory.state_dict(), reference.state_dict()
    assert ours["epoch"] == theirs["epoch"] == 2
    for part in ("settled", "fresh"):
        assert torch.equal(ours[part]["indices"], theirs[part]["indices"]), part
        assert torch.equal(ours[part]["scores"], theirs[part]["scores"]), part


def test_rows_of_another_length_are_ignored_like_the_reference(shared):
    reference, memory = ReferenceScoreMemory(0.5), ScoreMemory(0.5, WIDTH)
    memory.open(shared)
    short = _tokens(torch.tensor([3, 4]), width=6)
    full = _tokens(torch.tensor([3, 4]))
    scores = torch.rand(2, 6, generator=torch.Generator().manual_seed(0)) * valid_token_mask(short)
    for m in (reference, memory):
        m.store(torch.tensor([3, 4]), scores)
        m.start_epoch(1)
    for tokens in (short, full):
        a, b = reference.lookup(torch.tensor([3, 4]), tokens), memory.lookup(torch.tensor([3, 4]), tokens)
        assert torch.equal(a, b)
    assert not torch.equal(reference.lookup(torch.tensor([3]), short[:1]), 0.5 * valid_token_mask(short[:1]))


def test_bad_ids_rows_and_copies_are_one_line_errors(tmp_path, shared):
    memory = ScoreMemory(0.85, WIDTH)
    memory.open(shared)
    with pytest.raises(ValueError, match=r"^caption id 60 is outside the score store of 60 captions$"):
        memory.store(torch.tensor([60]), torch.zeros(1, WIDTH))
    with pytest.raises(ValueError, match=r"^caption id -1 is negative$"):
        memory.lookup(torch.tensor([-1]), _tokens(torch.tensor([1])))
    with pytest.raises(ValueError, match="do not fit the score store's 12"):
        memory.store(torch.tensor([1]), torch.zeros(1, WIDTH + 1))
    memory.store(torch.tensor([1]), torch.ones(1, WIDTH))
    entry = memory.save_copy(tmp_path)
    copy = tmp_path / entry["file"]
    target = tmp_path / "node.bin"
    with pytest.raises(ValueError, match="this run's corpus has 61") as caught:
        prepare_store(target, CAPTIONS + 1, WIDTH, entry, tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="this run's context length is 13"):
        prepare_store(target, CAPTIONS, WIDTH + 1, entry, tmp_path)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 differs from the checkpoint's record"):
        prepare_store(target, CAPTIONS, WIDTH, entry, tmp_path)
    copy.unlink()
    with pytest.raises(ValueError, match="score store copy is missing"):
        prepare_store(target, CAPTIONS, WIDTH, entry, tmp_path)
    assert not target.exists()  # nothing half-written is left for the ranks to map
    (tmp_path / "junk.bin").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="not a gadms score store"):
        ScoreMemory(0.85, WIDTH).open(tmp_path / "junk.bin")


def test_copies_are_named_by_content_and_stale_ones_dropped(tmp_path, shared):
    memory = ScoreMemory(0.85, WIDTH)
    memory.open(shared)
    first = memory.save_copy(tmp_path)
    memory.store(torch.tensor([5]), torch.ones(1, WIDTH))
    second = memory.save_copy(tmp_path)
    assert first["file"] != second["file"] and first["file"].startswith(COPY_PREFIX)
    assert (tmp_path / second["file"]).read_bytes() == shared.read_bytes()  # a plain copy of the store
    drop_stale_copies(tmp_path, second)
    assert sorted(p.name for p in tmp_path.glob(f"{COPY_PREFIX}*")) == [second["file"]]


def test_every_rank_of_a_node_names_the_same_node_local_file(tmp_path):
    here = store_path(tmp_path / "run")
    code = "import sys; from gadms.model.score_memory import store_path; print(store_path(sys.argv[1]))"
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run" / ".." / "run")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(other) == here and here != store_path(tmp_path / "other")
