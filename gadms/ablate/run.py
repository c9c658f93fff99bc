"""``gadms ablate``: the plan (corpora, base weights, benchmarks), every (row, seed) cell, the summary.

:func:`prepare` builds (or reuses) the synthetic corpora and the base weights and opens the MLflow parent;
:func:`run_and_log` runs one cell and logs its child run; :func:`finish` writes the table and chart. The CLI
calls :func:`run_ablation`, the Prefect flow (``flows/ablate.py``) calls the three steps as tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from gadms.ablate.cells import Plan, plan_key, run_cell
from gadms.ablate.compare import comparison
from gadms.ablate.report import RowSummary, bar_chart, summarise, to_csv, to_markdown, to_text
from gadms.ablate.rows import row_params
from gadms.config import Params
from gadms.reproducible_writes import write_bytes_atomic


@dataclass
class Ablation:
    """A prepared ablation: the plan, the MLflow tracker (None when not tracked) and the base stage's timing."""

    plan: Plan
    tracker: Any
    base_s: float = 0.0
    base_built: bool = False


def _benchmarks(params: Params, held_out: Path | None, benchmarks_root: Path | None) -> dict[str, Path]:
    if benchmarks_root is None:
        assert held_out is not None
        return {"cuhk-pedes": held_out}
    from gadms.tracking.tracked_training import present_benchmarks

    names = present_benchmarks(params.eval.benchmarks, benchmarks_root)
    if not names:
        raise ValueError(f"--benchmarks-root {benchmarks_root}: none of eval.benchmarks is there")
    return {name: Path(benchmarks_root) for name in names}


def prepare(
    params: Params,
    corpus: Path | None = None,
    corpus_format: str = "cuhk-pedes",
    benchmarks_root: Path | None = None,
    track: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> Ablation:
    """Build or reuse the testbed corpora and the base weights; open (or reopen) the MLflow parent run.

    Args:
        params: the ablation's parameters (``ablate`` section and the training settings of every row).
        corpus: a pre-training corpus to use instead of the synthetic noisy one.
        corpus_format: its format (``curated``, ``webperson``, a benchmark name).
        benchmarks_root: evaluate on the ``eval.benchmarks`` found here instead of the synthetic held-out set.
        track: log to MLflow.
        device: where the base stage trains.
        log: where progress lines go.

    Returns:
        The prepared ablation.
    """
    from gadms.ablate.base import ensure_base
    from gadms.ablate.testbed import build_corpus

    cfg = params.ablate
    out = Path(cfg.out_dir)
    data_dir = out / "data"
    corpus_key = str(corpus)
    if corpus is not None:  # read before the base stage's minutes of work: a bad --corpus is one line at once
        from gadms.train.recipes import pretrain_dataset

        pretrain_dataset(params, corpus_format, corpus)
    clean = None
    if corpus is None:
        built = build_corpus("corpus", cfg.corpus, params.synth, data_dir)
        corpus, corpus_format, corpus_key = built.root, "cuhk-pedes", built.key
        if "clean" in cfg.rows:  # the same identities and images, every caption as written before the noise
            clean = build_corpus(
                "corpus-clean", cfg.corpus.model_copy(update={"caption_noise": 0.0}), params.synth, data_dir
            ).root
    held_out = build_corpus("held-out", cfg.held_out, params.synth, data_dir).root if benchmarks_root is None else None
    benchmarks = _benchmarks(params, held_out, benchmarks_root)
    pretrained, base_key, base_s, base_built = params.model.pretrained, None, 0.0, False
    if pretrained is None and cfg.base.enabled:
        log("base stage: pre-training on clean captions (cached once built) ...")
        base = ensure_base(params, device)
        pretrained, base_key, base_s, base_built = str(base.weights.absolute()), base.key, base.seconds, base.built
        log(f"base weights {base.weights} ({'built in %.0fs' % base.seconds if base.built else 'reused'})")
    key = plan_key(params, corpus_key, {k: str(v) for k, v in benchmarks.items()}, base_key or pretrained)
    extra, notes = fairness(params, Path(corpus), pretrained, base_key is not None, device, log)
    plan = Plan(params, Path(corpus), corpus_format, benchmarks, pretrained, out, key, extra, notes, clean)
    tracker = None
    if track:
        from gadms.ablate.tracking import AblationTracker

        tracker = AblationTracker(params, out, key)
        log(f"MLflow parent run {tracker.parent_id} ({'reopened' if tracker.reopened else 'new'})")
    return Ablation(plan, tracker, base_s, base_built)


def fairness(
    params: Params, corpus: Path, pretrained: str | None, from_base: bool, device: str, log: Callable[[str], None]
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """The rows' calibrated overrides (``ablate.noise_mask_rate``) and the lines the table carries with them.

    With a checkable held-out corpus and the base stage, the ceiling check (cached) adds one line when it fails.
    """
    cfg = params.ablate
    extra: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []
    if cfg.noise_mask_rate is not None:
        from gadms.ablate.calibrate import calibrate, format_calibrations

        if pretrained is None:
            raise ValueError(
                "ablate.noise_mask_rate calibrates on the base weights: needs the base stage or model.pretrained"
            )
        found = calibrate(params, cfg.rows, Path(pretrained), corpus)
        extra = {row: (c.override(),) for row, c in found.items()}
        notes.append(
            f"noise midpoints calibrated on the base to a mean noise-mask probability of {cfg.noise_mask_rate}:"
        )
        notes.append(format_calibrations(found))
        log("\n".join(notes))
    if from_base and cfg.held_out.vocabulary == "checkable":
        from gadms.ablate.ceiling import ceiling_line, check_ceiling

        line = ceiling_line(check_ceiling(params, device))
        if line is not None:
            notes.append(line)
            log(line)
    return extra, tuple(notes)


def run_and_log(ablation: Ablation, row: str, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Run one cell (or reuse its result) and give it a child run unless it has one.

    Args:
        ablation: the prepared ablation.
        row: the row.
        seed: the seed.
        device: where to train and evaluate.

    Returns:
        The cell's result (``reused`` True when it was not rerun).
    """
    result = run_cell(ablation.plan, row, seed, device)
    tracker = ablation.tracker
    if tracker is not None and (row, seed) not in tracker.children():
        plan = ablation.plan
        tracker.log_child(row_params(plan.params, row, seed, plan.pretrained, plan.extra.get(row, ())), result)
    return result


def finish(ablation: Ablation, results: Sequence[dict[str, Any]]) -> tuple[list[RowSummary], str]:
    """Write ``OUT/results.{csv,md,txt}`` and ``OUT/ablation.png``; log them to the parent run and end it.

    Returns:
        The summary and its printed form.
    """
    rows = ablation.plan.params.ablate.rows
    summary = summarise(results, rows)
    text = "\n".join([to_text(summary), *ablation.plan.notes, *comparison(results, rows)])
    out = ablation.plan.out
    write_bytes_atomic(out / "results.csv", to_csv(summary).encode("utf-8"))
    notes = "\n".join([*ablation.plan.notes, *comparison(results, rows)])
    markdown = to_markdown(summary) + (f"\n```\n{notes}\n```\n" if notes else "")
    write_bytes_atomic(out / "results.md", markdown.encode("utf-8"))
    write_bytes_atomic(out / "results.txt", (text + "\n").encode("utf-8"))
    bar_chart(summary, out / "ablation.png")
    if ablation.tracker is not None:
        ablation.tracker.log_summary(summary, text)
        ablation.tracker.finish()
    return summary, text


def cell_line(result: dict[str, Any], index: int, total: int) -> str:
    """One progress line: ``[3/18] gass seed 1: cuhk-pedes R1 12.30 mAP 20.10 (85s)``."""
    metrics = " ".join(f"{b} R1 {m['R1']:.2f} mAP {m['mAP']:.2f}" for b, m in result["metrics"].items())
    when = "reused" if result.get("reused") else f"{result['train_s'] + result['eval_s']:.0f}s"
    return f"[{index}/{total}] {result['row']} seed {result['seed']}: {metrics} ({when})"


def run_ablation(
    params: Params,
    corpus: Path | None = None,
    corpus_format: str = "cuhk-pedes",
    benchmarks_root: Path | None = None,
    track: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[list[RowSummary], str, Ablation]:
    """Every row x seed of ``params.ablate``, resumable; the summary table.

    Args:
        params: see :func:`prepare`.
        corpus: see :func:`prepare`.
        corpus_format: see :func:`prepare`.
        benchmarks_root: see :func:`prepare`.
        track: log to MLflow.
        device: where to train and evaluate.
        log: where progress lines go.

    Returns:
        The summary, its printed form and the ablation (plan, parent run).
    """
    started = time.perf_counter()
    ablation = prepare(params, corpus, corpus_format, benchmarks_root, track, device, log)
    cells = [(row, seed) for row in params.ablate.rows for seed in params.ablate.seeds]
    results = []
    try:
        for index, (row, seed) in enumerate(cells, 1):
            result = run_and_log(ablation, row, seed, device)
            results.append(result)
            log(cell_line(result, index, len(cells)))
    except BaseException:
        if ablation.tracker is not None:
            ablation.tracker.finish("FAILED")
        raise
    summary, text = finish(ablation, results)
    log(f"ablation finished in {time.perf_counter() - started:.0f}s")
    return summary, text, ablation
