"""One tracked MLflow run: every parameter, provenance tags, and logging helpers.

:func:`tracked_run` opens a run in ``tracking.experiment`` (nested under a
parent run when given) and logs, before anything else:

- a short set of parameters (see :func:`shown_params`), flattened
  (``train.optimizer.lr``), as strings (YAML spelling: ``null``, ``true``,
  ``[1, 2]``), cut to MLflow's 6000-character limit: the key settings
  (``KEY_PARAMS``), every setting that differs from the built-in defaults
  (locations under ``paths.`` aside) and ``data_hash``; the whole resolved
  parameter set goes into the artifact ``params.yaml``;
- tags ``stage``, ``dvc.data_hash`` (the dataset's DVC hash, ``unknown`` when
  not given), ``git.commit`` and ``mlflow.source.git.commit`` (``git rev-parse
  HEAD`` of the repository the ``gadms`` code runs from, ``unknown`` outside
  git) and ``git.dirty`` (``true`` when tracked files differ from the commit).

Every parameter, tag, text and the run name pass through a
:class:`~gadms.tracking.redact.Redactor`, so an API key from the environment
never reaches the store. Inside the ``with`` block, a :class:`TrackedRun`
logs epochs, benchmark metrics, figures, texts and the model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gadms.config import Params, flatten
from gadms.tracking.provenance import UNKNOWN, provenance_tags
from gadms.tracking.redact import Redactor
from gadms.tracking.stopped import end_run, end_status, listed
from gadms.tracking.store import ensure_experiment, using_store

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.models.model import ModelInfo

    from gadms.model.retrieval import PersonRetrievalModel
    from gadms.tracking.examples import RetrievalExample
    from gadms.train.loop import EpochLog

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
METRIC_DECIMALS = 2  # benchmark metrics are percentages: 0.01 is finer than one query of any benchmark split
# Logged on every run, default or not, so runs line up on them in the MLflow runs table and compare view.
KEY_PARAMS = (
    "seed",
    "model.backbone",
    "model.pretrained",
    "model.gass.variant",
    "model.masking.score",
    "model.masking.replacement",
    "model.interaction.variant",
    "train.epochs",
    "train.batch_size",
    "train.optimizer.lr",
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.lr",
)
UNSHOWN_PREFIXES = ("paths.",)  # where things are, not what was trained: in params.yaml only
TRUNCATED = "...[truncated]"
TRAIN_PREFIX = "train"


def param_text(value: Any) -> str:
    """A parameter value as text: strings as is, anything else as JSON (``null``, ``true``, ``[1, 2]``).

    Args:
        value: a flattened parameter value (JSON-compatible).

    Returns:
        The string.
    """
    return value if isinstance(value, str) else json.dumps(value)


def fit_param(text: str) -> str:
    """Cut a parameter value to MLflow's 6000 characters, marking the cut.

    Args:
        text: the value.

    Returns:
        ``text``, or its start followed by ``...[truncated]``.
    """
    if len(text) <= MAX_PARAM_LENGTH:
        return text
    return text[: MAX_PARAM_LENGTH - len(TRUNCATED)] + TRUNCATED


def flat_params(params: Params) -> dict[str, str]:
    """Every parameter, flattened and stringified for MLflow (not yet redacted or cut).

    Args:
        params: the run's parameters.

    Returns:
        ``{"train.optimizer.lr": "0.0005", ...}``.
    """
    return {key: param_text(value) for key, value in flatten(params).items()}


def shown_params(params: Params, data_hash: str | None = None) -> dict[str, str]:
    """The parameters logged as MLflow params: key settings, what differs from the defaults, the data hash.

    A run of the default params.yaml logs ``KEY_PARAMS`` and ``data_hash``; a run with ``--set
    train.warmup_epochs=2`` adds ``train.warmup_epochs``. Everything else is in the ``params.yaml`` artifact.

    Args:
        params: the run's parameters.
        data_hash: the dataset's DVC hash (``unknown`` when None).

    Returns:
        Name -> value as text, in ``KEY_PARAMS`` order then the changed ones in file order.
    """
    values, defaults = flat_params(params), flat_params(Params())
    shown = {key: values[key] for key in KEY_PARAMS if key in values}
    for key, value in values.items():
        if key not in shown and value != defaults.get(key) and not key.startswith(UNSHOWN_PREFIXES):
            shown[key] = value
    shown["data_hash"] = data_hash or UNKNOWN
    return shown


def metric_name(benchmark: str, metric: str, prefix: str = "") -> str:
    """The logged name of a benchmark metric: ``cuhk-pedes/R1`` or ``finetuned/cuhk-pedes/R1``.

    Args:
        benchmark: benchmark name.
        metric: ``R1``, ``mAP``, ...
        prefix: the setting (``direct``, ``finetuned``, ``cross``), empty for none.

    Returns:
        The metric key.
    """
    return "/".join(part for part in (prefix, benchmark, metric) if part)


class TrackedRun:
    """Logging helpers bound to one run (made by :func:`tracked_run`).

    Attributes:
        run_id: the MLflow run id.
        redactor: what keeps secrets out of texts and tags.
    """

    def __init__(self, run_id: str, uri: str, redactor: Redactor):
        from mlflow import MlflowClient

        self.run_id = run_id
        self.redactor = redactor
        self._client = MlflowClient(uri)

    def log_params(self, values: Mapping[str, Any]) -> None:
        """Log parameters: stringified, redacted, then cut to MLflow's 6000 characters.

        Args:
            values: name -> value.
        """
        from mlflow.entities import Param

        safe = self.redactor.redact_mapping({k: param_text(v) for k, v in values.items()}, "param")
        self._client.log_batch(self.run_id, params=[Param(k, fit_param(v)) for k, v in safe.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified and redacted).

        Args:
            tags: name -> value.
        """
        from mlflow.entities import RunTag

        safe = self.redactor.redact_mapping({k: str(v) for k, v in tags.items()}, "tag")
        self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in safe.items()])

    def log_values(self, values: Mapping[str, float], step: int = 0) -> None:
        """Log numeric metrics at ``step`` (a NaN loss is logged too: it is how divergence shows).

        Args:
            values: metric name -> value.
            step: the step (epoch number for per-epoch values).
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def log_epoch(self, log: EpochLog) -> None:
        """Log one epoch (usable as the Trainer's ``on_epoch`` callback).

        Logs ``train/<loss name>`` (e.g. ``train/sdm_loss``), ``train/lr``,
        ``train/samples_per_s`` and ``train/epoch_s`` at step ``epoch + 1``
        (the epoch number the CLI prints, so step 1 is the first epoch).

        Args:
            log: a :class:`gadms.train.loop.EpochLog`.
        """
        values = {f"{TRAIN_PREFIX}/{name}": value for name, value in log.losses.items()}
        values.update(
            {
                f"{TRAIN_PREFIX}/lr": log.lr,
                f"{TRAIN_PREFIX}/samples_per_s": log.samples_per_s,
                f"{TRAIN_PREFIX}/epoch_s": log.seconds,
            }
        )
        self.log_values(values, step=log.epoch + 1)

    def log_metrics(self, benchmark: str, metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
        """Log a benchmark's retrieval metrics under comparable names (see :func:`metric_name`), to 2 decimals.

        Args:
            benchmark: e.g. ``cuhk-pedes``.
            metrics: ``{"R1": ..., "mAP": ...}``.
            prefix: ``direct``, ``finetuned``, ``cross`` or empty.

        Returns:
            What was logged (rounded), by full metric name.
        """
        named = {
            metric_name(benchmark, key, prefix): round(float(value), METRIC_DECIMALS) for key, value in metrics.items()
        }
        self.log_values(named)
        return named

    def log_figure(self, figure: Figure, path: str) -> None:
        """Save a matplotlib figure as an artifact (``.png`` path: PNG).

        Args:
            figure: a matplotlib Figure.
            path: artifact path, e.g. ``figures/direct/cuhk-pedes/query_0.png``.
        """
        self._client.log_figure(self.run_id, figure, path)

    def log_text(self, text: str, path: str) -> None:
        """Save a text as an artifact, secrets redacted.

        Args:
            text: e.g. the caption quality gate's summary.
            path: artifact path, e.g. ``quality/gate_summary.md``.
        """
        self._client.log_text(self.run_id, self.redactor.redact(text, f"text {path}"), path)

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        """Copy a local file or directory into the run's artifacts.

        Args:
            local_path: what to copy.
            artifact_dir: folder inside the artifacts (default: the top).
        """
        self._client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def log_token_scores(self, log: EpochLog, path: str = "figures/token_scores.png", captions: int = 4) -> bool:
        """Log the GASS token-score figure of an epoch's last batch (a few of its captions).

        Args:
            log: a :class:`gadms.train.loop.EpochLog` (``scores`` and ``tokens`` set in GA-DMS mode).
            path: artifact path of the PNG.
            captions: how many captions to draw.

        Returns:
            Whether a figure was logged (False when the epoch has no scores, e.g. fine-tuning).
        """
        from gadms.model.backbone import tokenizer
        from gadms.model.figures import token_score_figure

        if log.scores is None or log.tokens is None:
            return False
        decoder = tokenizer().decoder
        with tempfile.TemporaryDirectory() as scratch:
            png = token_score_figure(
                log.tokens[:captions],
                log.scores[:captions].float(),
                decoder,
                Path(scratch) / Path(path).name,
                title=f"GASS token scores, epoch {log.epoch + 1}",
            )
            self.log_artifact(png, str(Path(path).parent) if Path(path).parent != Path(".") else None)
        return True

    def log_retrieval_examples(
        self, examples: Sequence[RetrievalExample], benchmark: str, prefix: str = "", k: int | None = None
    ) -> list[str]:
        """Log one retrieval figure per example query.

        Args:
            examples: :class:`gadms.tracking.examples.RetrievalExample` items.
            benchmark: benchmark name (folder and title).
            prefix: the setting (``direct``, ``finetuned``, ``cross``), folder and title.
            k: images per figure (default: all the example has).

        Returns:
            The artifact paths, ``figures/<prefix>/<benchmark>/query_<index>.png``.
        """
        from gadms.tracking.figures import retrieval_examples_figure

        paths = []
        for example in examples:
            path = "/".join(p for p in ("figures", prefix, benchmark, f"query_{example.query_index}.png") if p)
            title = f"{prefix + ', ' if prefix else ''}{benchmark}: query {example.query_index} (green: same identity)"
            self.log_figure(
                retrieval_examples_figure(example.query, example.images[:k], example.correct[:k], title), path
            )
            paths.append(path)
        return paths

    def log_model(self, model: PersonRetrievalModel | Path, name: str = "model") -> ModelInfo:
        """Log the model as a pyfunc in this run (see :mod:`gadms.tracking.pyfunc`).

        Args:
            model: a :class:`PersonRetrievalModel` or a model file / run directory.
            name: the logged model's name (artifact path).

        Returns:
            MLflow's ``ModelInfo``.
        """
        from gadms.tracking.pyfunc import log_retrieval_model

        return log_retrieval_model(model, name)


@contextmanager
def tracked_run(
    params: Params,
    run_name: str,
    stage: str,
    data_hash: str | None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    root: Path | None = None,
) -> Iterator[TrackedRun]:
    """Open an MLflow run with its parameters and provenance tags logged (see the module docstring).

    The run ends FINISHED when the block completes, FAILED when it raises an error and KILLED when it is stopped
    (Ctrl-C, a SIGTERM or a cancellation in a Prefect flow run; see :mod:`gadms.tracking.stopped`). While open it
    is listed in :mod:`gadms.tracking.stopped`, so a guarded command that a signal stops ends it KILLED too.

    Args:
        params: the run's parameters (the shown ones as params, all in ``params.yaml``).
        run_name: display name of the run.
        stage: ``pretrain``, ``finetune``, ``evaluate``, ... (tag ``stage``).
        data_hash: the dataset's DVC hash (tag ``dvc.data_hash``).
        tags: extra tags.
        parent_run_id: nest the run under this run (a run already active in this thread is the parent by default).
        root: directory a relative ``paths.mlruns_dir`` is resolved against (default: the working directory).

    Returns:
        A context manager yielding the :class:`TrackedRun`.
    """
    import mlflow

    redactor = Redactor.from_params(params)
    redactor.refuse_in_name(params.tracking.experiment, "tracking.experiment")
    all_tags = {**provenance_tags(stage, data_hash), **{k: str(v) for k, v in (tags or {}).items()}}
    nested = mlflow.active_run() is not None  # inside another run (e.g. a flow's): nest under it
    with using_store(params, root) as uri:
        experiment_id = ensure_experiment(params.tracking.experiment, uri)
        with (
            mlflow.start_run(
                experiment_id=experiment_id,
                run_name=redactor.redact(run_name, "run name"),
                nested=nested,
                parent_run_id=parent_run_id,
                tags=redactor.redact_mapping(all_tags, "tag"),
            ) as run,
            listed(run.info.run_id, uri),
        ):
            tracked = TrackedRun(run.info.run_id, uri, redactor)
            try:
                log_all_params(tracked, params, data_hash)
                yield tracked
            except BaseException as exc:
                end_run(run.info.run_id, uri, end_status(exc))
                raise


def log_all_params(run: TrackedRun, params: Params, data_hash: str | None = None) -> None:
    """Log the shown parameters (redacted; see :func:`shown_params`) and the whole parameter set as ``params.yaml``.

    Args:
        run: the run.
        params: the parameters.
        data_hash: the dataset's DVC hash (param ``data_hash``).
    """
    run.log_params(shown_params(params, data_hash))
    run.log_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), "params.yaml")
