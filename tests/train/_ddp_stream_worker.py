"""Run under torch.distributed.run by test_distributed.py: streamed SDM on 2 ranks (straight, killed, resumed)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_streaming  # noqa: E402


def main() -> None:
    out, how = Path(sys.argv[1]), sys.argv[2]
    model, _ = run_streaming(
        out, epochs=2, resume=how == "resume", stop_after_steps=8 if how == "stop" else None, world_batch=8
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(model.state_dict(), out / f"{how}-rank{rank}.pt")


if __name__ == "__main__":  # loader workers started by forkserver import this file again
    main()
