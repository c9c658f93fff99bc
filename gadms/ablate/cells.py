"""One ablation cell: train one row with one seed from the base weights, evaluate it, keep the result on disk.

A cell's result is ``OUT/results/<row>-seed<seed>.json``; its run directory ``OUT/runs/<row>-seed<seed>-<key>``
(``checkpoint.pt`` after every epoch, ``model.safetensors``). A result whose key (the digest of the cell's
parameters, corpus, benchmarks and base weights) matches is final: it is never recomputed. A cell killed midway
resumes from its checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gadms.ablate.rows import ROWS, digest, result_shaping, row_params
from gadms.config import Params
from gadms.reproducible_writes import write_bytes_atomic

CLEAN_ROW = "clean"  # trained on Plan.clean_corpus instead of Plan.corpus
RESULTS_DIR = "results"
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Plan:
    """What every cell shares: parameters, corpus, benchmarks, base weights and the output folder."""

    params: Params
    corpus: Path
    corpus_format: str
    benchmarks: dict[str, Path]  # benchmark name -> its root (test split evaluated)
    pretrained: str | None
    out: Path
    key: str  # digest of all of the above that shapes a result
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)  # row -> calibrated overrides (noise midpoint)
    notes: tuple[str, ...] = ()  # lines the table carries (the calibration, the ceiling's verdict)
    clean_corpus: Path | None = None  # the corpus without its wrong words (the clean row's)


def plan_key(params: Params, corpus_key: str, benchmarks: dict[str, str], base_key: str | None) -> str:
    """The digest of what every cell's result depends on, apart from its row and seed."""
    return digest({"params": result_shaping(params), "corpus": corpus_key, "benchmarks": benchmarks, "base": base_key})


def cell_name(row: str, seed: int) -> str:
    """``<row>-seed<seed>``."""
    return f"{row}-seed{seed}"


def cell_key(plan: Plan, row: str, seed: int) -> str:
    """The digest of one cell's inputs."""
    overrides = [*ROWS[row], *plan.extra.get(row, ())]
    return digest({"plan": plan.key, "row": row, "overrides": overrides, "seed": seed})


def result_path(out: Path, row: str, seed: int) -> Path:
    """Where a cell's result is kept."""
    return Path(out) / RESULTS_DIR / f"{cell_name(row, seed)}.json"


def load_result(plan: Plan, row: str, seed: int) -> dict[str, Any] | None:
    """The finished result of a cell, or None when it is missing, unreadable or from other inputs."""
    path = result_path(plan.out, row, seed)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("key") == cell_key(plan, row, seed) else None


def masking_at_end(plan: Plan, cell: Params, model: Any, corpus: Path) -> dict[str, float] | None:
    """The row's noise-mask rate and selectivity with its trained model on the checkable corpus's noisy captions
    (None for a row that masks nothing, or a corpus without recorded wrong words)."""
    from gadms.ablate.calibrate import masking_now, noisy_sample

    truth = Path(corpus) / "CUHK-PEDES" / "synthetic_truth.json"
    if cell.model.masking.score == "none" or corpus == plan.clean_corpus or not truth.is_file():
        return None  # nothing masked, or no wrong words to measure against
    if plan.params.ablate.corpus.vocabulary != "checkable":
        return None
    try:
        sample = noisy_sample(Path(corpus), cell)
    except ValueError:  # not a checkable corpus (a --corpus of another kind), or no noisy captions
        return None
    return masking_now(cell, model.to("cpu").eval(), sample)


def run_cell(plan: Plan, row: str, seed: int, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell, unless its result is already there.

    Args:
        plan: the shared inputs.
        row: a key of :data:`gadms.ablate.rows.ROWS`.
        seed: the cell's seed.
        device: where to train and evaluate.
        progress: show the training progress bar.

    Returns:
        The result: ``row``, ``seed``, ``key``, ``metrics`` (benchmark -> R1, R5, R10, mAP, mINP), ``epochs``
        (per-epoch losses), ``train_s``, ``model`` and ``reused`` (True when nothing was run).
    """
    done = load_result(plan, row, seed)
    if done is not None:
        return {**done, "reused": True}
    from gadms.data.benchmarks import load_benchmark
    from gadms.eval.evaluate import evaluate_split
    from gadms.train.recipes import run_pretrain

    corpus = plan.clean_corpus if row == CLEAN_ROW else plan.corpus
    if corpus is None:
        raise ValueError("row clean needs the synthetic corpus (not --corpus): it trains on its clean copy")
    key = cell_key(plan, row, seed)
    params = row_params(plan.params, row, seed, plan.pretrained, plan.extra.get(row, ()))
    run_dir = plan.out / RUNS_DIR / f"{cell_name(row, seed)}-{key[:12]}"
    started = time.perf_counter()
    resume = (run_dir / "checkpoint.pt").is_file()
    model, history = run_pretrain(
        params, corpus, plan.corpus_format, run_dir, resume=resume, device=device, progress=progress
    )
    train_s = time.perf_counter() - started
    model.eval()
    metrics = {
        name: evaluate_split(model, load_benchmark(name, root, "test"), chunk=params.eval.query_chunk, device=device)
        for name, root in plan.benchmarks.items()
    }
    result = {
        "row": row,
        "seed": seed,
        "key": key,
        "overrides": [*ROWS[row], *plan.extra.get(row, ())],
        "metrics": metrics,
        "epochs": [{"epoch": h.epoch + 1, "lr": h.lr, "seconds": h.seconds, **h.losses} for h in history],
        "train_s": train_s,
        "eval_s": time.perf_counter() - started - train_s,
        "resumed": resume,
        "model": str(run_dir / "model.safetensors"),
    }
    masking = masking_at_end(plan, params, model, corpus)
    if masking is not None:
        result["masking_end"] = masking
    write_bytes_atomic(result_path(plan.out, row, seed), json.dumps(result, indent=1).encode("utf-8"))
    return {**result, "reused": False}
