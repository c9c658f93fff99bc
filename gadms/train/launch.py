"""Training in a child ``gadms train`` command, which relaunches itself under torchrun (``train.gpus`` > 1).

The pipeline trains in its own process on one device; with several GPUs it runs ``python -m gadms train
pretrain|finetune ... --result-json FILE`` instead, with the parameter file and ``--set`` overrides it was
started with (a credential passed by reference, see :class:`gadms.results.ParamsSource`), and reads FILE back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gadms.results import ParamsSource


def _optional(flag: str, value: str | None) -> list[str]:
    """``[flag, value]`` when ``value`` is set, else nothing."""
    return [flag, value] if value else []


def pretrain_options(
    data_dir: Path, out_dir: Path, data_hash: str, parent_run_id: str | None, resume: bool
) -> list[str]:
    """The options of ``gadms train pretrain`` for the pipeline's pre-training."""
    return [
        *("--data", str(data_dir), "--out", str(out_dir), "--data-hash", data_hash),
        *_optional("--parent-run-id", parent_run_id),
        *(["--resume"] if resume else []),
    ]


def finetune_options(
    benchmark: str,
    benchmark_root: Path,
    pretrained: Path,
    out_dir: Path,
    data_hash: str,
    parent_run_id: str | None,
    resume: bool,
) -> list[str]:
    """The options of ``gadms train finetune`` for the pipeline's fine-tuning (registered by the pipeline)."""
    return [
        *("--benchmark", benchmark, "--root", str(benchmark_root), "--init", str(pretrained)),
        *("--out", str(out_dir), "--data-hash", data_hash, "--no-register"),
        *_optional("--parent-run-id", parent_run_id),
        *(["--resume"] if resume else []),
    ]


def train_command(stage: str, options: Sequence[str], source: ParamsSource, result_json: Path) -> list[str]:
    """``python -m gadms train STAGE OPTIONS --params FILE --set ... --result-json RESULT``.

    Args:
        stage: ``pretrain`` or ``finetune``.
        options: the stage's options (:func:`pretrain_options`, :func:`finetune_options`).
        source: the parameter file and overrides of the run.
        result_json: where the command writes its run id, model path and metrics.

    Returns:
        The command line.
    """
    return [
        sys.executable,
        "-m",
        "gadms",
        "train",
        stage,
        *options,
        *source.cli_args(),
        "--result-json",
        str(result_json),
    ]


def run_train_command(command: Sequence[str], result_json: Path) -> dict[str, Any]:
    """Run a :func:`train_command` to its end and read what it wrote.

    The command (torchrun and its ranks with it) ends when this process ends.

    Raises:
        subprocess.CalledProcessError: the command failed.
    """
    from gadms.lifetime import linked_env

    subprocess.run(list(command), check=True, env=linked_env())
    payload: dict[str, Any] = json.loads(Path(result_json).read_text(encoding="utf-8"))
    return payload
