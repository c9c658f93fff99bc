"""The MLflow side of one pipeline run: its parent run, the links of its stages' runs and its results.

:func:`check_inputs` says whether the inputs (corpus, parameters, code) are those of a registered version, in
which case the pipeline trains nothing. :func:`pipeline_run` opens the parent run (stage ``pipeline``) with the
gate's kept report as ``quality/<report>``; its :class:`PipelineRun` collects ``(stage, run id, link)`` for the
pipeline's Prefect artifact, records the registry decision (tags ``registry.version``, ``registry.promoted``; the
version marked with the inputs' fingerprint) and the search showcase's figures (``figures/search``), and at the
end logs the headline metrics (``direct/<benchmark>/R1``, ...) and ``results.txt``. Nothing here needs Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gadms.config import Params
from gadms.results import CorpusVersion, CuratedCorpus, Evaluation, PipelineResult, Promotion, TrainedModel
from gadms.tracking.mlflow_run import TrackedRun

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
HEADLINE = ("R1", "mAP")
SYNTHETIC_BENCHMARKS = ("cuhk-pedes",)  # what pipeline.synthesize builds
RESULTS_HEADER = ("benchmark", "setting", *METRICS)


def _settings(name: str, direct: Mapping[str, Evaluation], tuned: Mapping[str, TrainedModel]) -> Iterator[tuple]:
    """``(setting, metrics)`` of benchmark ``name``: direct transfer, then fine-tuned, where there are metrics."""
    for setting, found in (("direct", direct.get(name)), ("finetuned", tuned.get(name))):
        if found is not None and found.metrics:
            yield setting, found.metrics


def results_table(direct: Mapping[str, Evaluation], tuned: Mapping[str, TrainedModel]) -> list[tuple[str, ...]]:
    """One row per benchmark and setting: R1, R5, R10, mAP, mINP (two decimals)."""
    return [
        (name, setting, *(f"{metrics[f'{name}/{m}']:.2f}" for m in METRICS))
        for name in sorted(set(direct) | set(tuned))
        for setting, metrics in _settings(name, direct, tuned)
    ]


def headline_metrics(direct: Mapping[str, Evaluation], tuned: Mapping[str, TrainedModel]) -> dict[str, float]:
    """R1 and mAP per setting and benchmark (``finetuned/cuhk-pedes/R1``), copied onto the pipeline run.

    One name per setting and benchmark, so successive pipeline runs compare in one column and one chart.
    """
    return {
        f"{setting}/{name}/{m}": float(metrics[f"{name}/{m}"])
        for name in sorted(set(direct) | set(tuned))
        for setting, metrics in _settings(name, direct, tuned)
        for m in HEADLINE
    }


def format_results(rows: Sequence[Sequence[str]]) -> str:
    """The evaluation table as plain text."""
    widths = [max(len(str(r[i])) for r in [RESULTS_HEADER, *rows]) for i in range(len(RESULTS_HEADER))]
    return "\n".join(
        "  ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
        for row in [RESULTS_HEADER, *rows]
    )


def explicitly_set(overrides: Sequence[str], key: str) -> bool:
    """Whether one of the ``--set`` overrides sets ``key``."""
    return any(item.split("=", 1)[0].strip() == key for item in overrides)


def benchmarks_notice(params: Params, overrides: Sequence[str], present: Sequence[str]) -> tuple[int, str] | None:
    """The log level and line about the ``eval.benchmarks`` not found (None when all are there).

    A WARNING when none is there, when this run's ``--set`` named ``eval.benchmarks``, or when the benchmarks are
    real data (``pipeline.synthesize`` false): then a missing one is a problem. With the synthetic world, which
    builds CUHK-PEDES only, the others are expected to be absent: one INFO line says what is evaluated.
    """
    missing = [name for name in params.eval.benchmarks if name not in present]
    where = params.paths.benchmarks_dir
    if not present:
        return logging.WARNING, f"no benchmark of eval.benchmarks is under {where}: nothing to fine-tune or evaluate"
    if not missing:
        return None
    line = f"evaluating on {', '.join(present)}; not under {where}, skipped: {', '.join(missing)}"
    expected = params.pipeline.synthesize and set(present) <= set(SYNTHETIC_BENCHMARKS)
    if expected and not explicitly_set(overrides, "eval.benchmarks"):
        return logging.INFO, f"{line} (the synthetic world builds {', '.join(SYNTHETIC_BENCHMARKS)} only)"
    return logging.WARNING, line


def benchmarks_to_evaluate(params: Params, overrides: Sequence[str], log: Callable[[int, str], None]) -> list[str]:
    """The ``eval.benchmarks`` present under ``paths.benchmarks_dir``; what is missing is said (see
    :func:`benchmarks_notice`) through ``log(level, line)``.
    """
    from gadms.tracking.tracked_training import present_benchmarks

    present = present_benchmarks(params.eval.benchmarks, params.paths.benchmarks_dir)
    notice = benchmarks_notice(params, overrides, present)
    if notice is not None:
        log(*notice)
    return present


@dataclass(frozen=True)
class InputsCheck:
    """The fingerprint of a pipeline run's inputs and, when a registered version was trained on the same ones,
    the ``inputs unchanged: ...`` line (empty otherwise)."""

    fingerprint: str
    unchanged: str


def check_inputs(params: Params, data_hash: str) -> InputsCheck:
    """Fingerprint the corpus, the parameters and the code, and look for a version trained on them."""
    from gadms.tracking.provenance import git_state
    from gadms.tracking.retrain import find_unchanged, inputs_fingerprint

    fingerprint = inputs_fingerprint(params, data_hash, git_state().commit)
    found = find_unchanged(params, fingerprint)
    return InputsCheck(fingerprint, found.message() if found is not None else "")


class PipelineRun:
    """The open MLflow parent run of a pipeline run (made by :func:`pipeline_run`).

    Attributes:
        run: the tracked parent run.
        links: ``(stage, run id, url)`` per MLflow run, the pipeline's first.
        rows: the results table, once :meth:`finish` has run.
    """

    def __init__(self, params: Params, run: TrackedRun, fingerprint: str):
        self.params = params
        self.run = run
        self.fingerprint = fingerprint
        self.links: list[tuple[str, str, str]] = []
        self.rows: list[tuple[str, ...]] = []

    @property
    def run_id(self) -> str:
        """The parent run's id."""
        return self.run.run_id

    def record_promotion(self, promotion: Promotion) -> None:
        """Tag the parent run with the registry decision; mark the version with the inputs it was trained on."""
        from gadms.tracking.retrain import mark_version

        self.run.set_tags({"registry.version": promotion.version, "registry.promoted": str(promotion.promoted).lower()})
        mark_version(self.params, promotion.version, self.fingerprint)

    def log_search_figures(self, figures: Sequence[Path]) -> None:
        """Attach the search showcase's figures (``figures/search/query_<i>.png``)."""
        for figure in figures:
            self.run.log_artifact(Path(figure), "figures/search")

    def finish(
        self,
        flow_run: str,
        corpus: CuratedCorpus,
        version: CorpusVersion,
        pretrained: TrainedModel,
        direct: Mapping[str, Evaluation],
        tuned: Mapping[str, TrainedModel],
        promotion: Promotion | None,
    ) -> PipelineResult:
        """Add the links of the pre-training, direct-evaluation and fine-tuning runs to :attr:`links`; log the
        headline metrics and ``results.txt``; return the pipeline's result (see :class:`PipelineResult` for the
        arguments), its results table included.
        """
        self.links.append(("pretrain", pretrained.run_id, pretrained.link))
        self.links += [(f"evaluate direct {name}", e.run_id, e.link) for name, e in direct.items()]
        self.links += [(f"finetune {name}", t.run_id, t.link) for name, t in tuned.items()]
        self.rows = results_table(direct, tuned)
        table = format_results(self.rows)
        self.run.log_values(headline_metrics(direct, tuned))
        self.run.log_text(table, "results.txt")
        stages = (pretrained, direct, tuned, promotion, table)
        return PipelineResult(flow_run, corpus, version, "", self.run_id, *stages)

    def ui_command(self) -> str:
        """The ``mlflow ui`` command that serves the links (a local store); empty for a tracking server."""
        from gadms.tracking.links import run_link
        from gadms.tracking.store import ui_command

        return "" if run_link(self.params, self.run_id).served else ui_command(self.params)


@contextmanager
def pipeline_run(
    params: Params,
    title: str,
    corpus: CorpusVersion,
    benchmarks: Sequence[str],
    fingerprint: str,
    log: Callable[[str], None] = print,
) -> Iterator[PipelineRun]:
    """Open the pipeline's MLflow parent run (stage ``pipeline``, tag ``benchmarks``) for the ``with`` block.

    Args:
        params: the run's parameters.
        title: the run's name (the flow run's).
        corpus: the versioned corpus; its gate's kept report is logged under ``quality/``.
        benchmarks: the benchmarks evaluated.
        fingerprint: the inputs' fingerprint (see :func:`check_inputs`), marked on the registered version.
        log: where the run's link is said.

    Returns:
        A context manager yielding the :class:`PipelineRun`; the run ends as :func:`tracked_run`'s do.
    """
    from gadms.tracking.links import run_link
    from gadms.tracking.mlflow_run import tracked_run

    tags = {"benchmarks": ",".join(benchmarks)}
    with tracked_run(params, title, "pipeline", corpus.md5, tags) as run:
        parent = PipelineRun(params, run, fingerprint)
        link = run_link(params, run.run_id)
        log(f"pipeline: {link.text()}")
        parent.links.append(("pipeline", run.run_id, link.url))
        if Path(corpus.gate.report).is_file():
            run.log_artifact(Path(corpus.gate.report), "quality")  # quality/<fingerprint>-<thresholds>.html
        yield parent
