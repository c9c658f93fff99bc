"""Loader workers started by the forkserver (a training process with other threads running) begin with torch,
open_clip and the readers already imported: the forkserver imports them once, instead of every worker of every
epoch importing them again (most of a demo epoch's time before)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from torch.utils.data import DataLoader, Dataset
    from gadms.train.feed import WORKER_MODULES, worker_context

    class Loaded(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return ",".join(m for m in WORKER_MODULES if m in sys.modules)

    if __name__ == "__main__":
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # as under Prefect or MLflow
        context = worker_context(1)
        loaded = next(iter(DataLoader(Loaded(), batch_size=None, num_workers=1, multiprocessing_context=context)))
        print(context, loaded)
    """
)


def test_a_forkserver_worker_starts_with_the_worker_modules_loaded(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    context, loaded = done.stdout.split()
    from gadms.train.feed import WORKER_MODULES

    assert context == "forkserver"
    assert loaded.split(",") == list(WORKER_MODULES)
