"""Run under torch.distributed.run by test_score_store_training.py: 2 ranks, 3 epochs of GA-DMS with
``score_timing: previous_epoch``; each rank records every score lookup and store of its memory."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import pairs  # noqa: E402

from gadms.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig  # noqa: E402
from gadms.data.pipeline import PairDataset, image_transform  # noqa: E402
from gadms.model.backbone import tokenizer  # noqa: E402
from gadms.model.retrieval import Architecture, PersonRetrievalModel  # noqa: E402
from gadms.train.loop import Trainer  # noqa: E402
from gadms.train.settings import RunSettings  # noqa: E402

CFG = ModelConfig(context_length=32, masking={"score_timing": "previous_epoch"})


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(CFG))
    dataset = PairDataset(pairs(out.parent), image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    run = RunSettings("gadms", 3, 8, OptimizerConfig(lr=1e-4, eps=1e-3), warmup_epochs=1)
    trainer = Trainer(model, dataset, run, CFG, LossConfig(itc={"enabled": False}), out, "cpu", progress=False)
    memory, calls, paths = trainer.step.memory, [], []
    lookup, store = memory.lookup, memory.store

    def recorded_lookup(ids, tokens):
        used = lookup(ids, tokens)
        calls.append([memory.epoch, ids.clone(), tokens.clone(), used.clone()])
        paths.append(str(memory.path))
        return used

    def recorded_store(keys, rows):
        calls[-1] += [keys.clone(), rows.detach().clone()]
        store(keys, rows)

    memory.lookup, memory.store = recorded_lookup, recorded_store
    trainer.fit()
    rank = torch.distributed.get_rank()
    assert len(set(paths)) == 1, paths
    torch.save({"calls": calls, "store": paths[0], "model": model.state_dict()}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
