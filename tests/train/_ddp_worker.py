"""Run under torch.distributed.run by test_distributed.py: one epoch, SDM mode, 2 ranks."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_training  # noqa: E402

out = Path(sys.argv[1])
model = run_training(out, world_batch=8, epochs=1, mode="sdm")
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
torch.save(model.state_dict(), out / f"rank{rank}.pt")
