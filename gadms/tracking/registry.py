"""The model registry: every trained model becomes a version; the best one holds the champion alias.

A new version is tagged with the benchmark it was measured on and its R1
there (``benchmark``, ``R1``). The alias ``tracking.champion_alias`` moves to
it only when there is no champion yet, or the champion was measured on the
same benchmark and the new R1 is strictly higher. A champion measured on
another benchmark (or without those tags) is not comparable, so nothing
moves; the version stays registered either way. Each version also records
the decision (``promoted``, ``promotion_reason``) for the UI.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from gadms.config import Params
from gadms.locks import writer_lock
from gadms.results import Promotion
from gadms.tracking.redact import Redactor
from gadms.tracking.store import sqlite_path, using_store

BENCHMARK_TAG = "benchmark"
R1_TAG = "R1"
SUMMARY_PARAMS = (
    "seed",
    "model.backbone",
    "model.pretrained",
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.lr",
    "train.epochs",
    "train.optimizer.lr",
)


@dataclass(frozen=True)
class Champion:
    """The version holding the champion alias and what it was measured on."""

    version: int
    benchmark: str | None
    r1: float | None


def promotion_decision(benchmark: str, r1: float, champion: Champion | None) -> tuple[bool, str]:
    """Whether a model with ``r1`` on ``benchmark`` should replace ``champion``.

    Args:
        benchmark: the benchmark the new model was measured on.
        r1: its R1 (percent).
        champion: the current champion, None when there is none.

    Returns:
        ``(promote, reason)``.
    """
    if champion is None:
        return True, f"no champion yet: R1 {r1:.2f} on {benchmark} becomes the champion"
    if champion.benchmark != benchmark or champion.r1 is None:
        measured = f"measured on {champion.benchmark}" if champion.benchmark else "has no benchmark tag"
        return False, f"not comparable: champion v{champion.version} {measured}, this version on {benchmark}"
    if r1 > champion.r1:
        return True, f"R1 {r1:.2f} beats champion v{champion.version} ({champion.r1:.2f}) on {benchmark}"
    return False, f"R1 {r1:.2f} does not beat champion v{champion.version} ({champion.r1:.2f}) on {benchmark}"


def current_champion(client, name: str, alias: str) -> Champion | None:
    """The version holding ``alias`` of registered model ``name``, or None.

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        alias: the champion alias.

    Returns:
        The champion with its benchmark and R1 tags (None where missing or unreadable).
    """
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such model or alias yet
        return None
    return Champion(int(version.version), version.tags.get(BENCHMARK_TAG), _as_float(version.tags.get(R1_TAG)))


def _as_float(text: str | None) -> float | None:
    """A tag as a finite float, or None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def logged_model_uri(client, run_id: str, name: str) -> str:
    """The URI of the model named ``name`` logged in run ``run_id``.

    Args:
        client: an ``MlflowClient``.
        run_id: the run.
        name: the logged model's name (its artifact path in the run).

    Returns:
        ``models:/<model id>`` (MLflow 3 logged model), else ``runs:/<run id>/<name>``.
    """
    for output in client.get_run(run_id).outputs.model_outputs or []:
        if client.get_logged_model(output.model_id).name == name:
            return f"models:/{output.model_id}"
    return f"runs:/{run_id}/{name}"


MODEL_DESCRIPTION = (
    "GA-DMS text-based person retrieval (CLIP dual encoder): text or image in, L2-normalised "
    "embeddings out. Versions are fine-tuned models; the champion alias holds the best R1."
)


def version_description(client, run_id: str, benchmark: str, r1: float, reason: str) -> str:
    """A model version's description: what it was measured on, the data and settings it came from, the decision.

    Args:
        client: an ``MlflowClient``.
        run_id: the run that logged the model.
        benchmark: the benchmark ``r1`` was measured on.
        r1: the model's R1 there (percent).
        reason: the promotion decision.

    Returns:
        Markdown text, values rounded to two decimals.
    """
    run = client.get_run(run_id)
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run.data.metrics.items()) if k.startswith(f"{benchmark}/"))
    settings = ", ".join(f"{k}={run.data.params[k]}" for k in SUMMARY_PARAMS if k in run.data.params)
    return (
        f"Fine-tuned on {benchmark}: R1 {r1:.2f}" + (f" ({metrics})" if metrics else "") + ".\n\n"
        f"Data: DVC hash {run.data.tags.get('dvc.data_hash', 'unknown')}; code "
        f"{run.data.tags.get('git.commit', 'unknown')}; "
        f"run {run_id}.\n\nSettings: {settings or 'see the run'}.\n\nDecision: {reason}."
    )


def register_and_maybe_promote(
    run_id: str, model_artifact_path: str, params: Params, benchmark: str, r1: float, root: Path | None = None
) -> Promotion:
    """Register the run's model as a new version and move the champion alias to it if it is better.

    Registering is idempotent: the same run measured the same way (benchmark and R1) is one version, however
    often or from however many processes it is registered (a retried task, two pipelines). On a local store
    the steps run under a lock next to the database; on a tracking server a twin registered meanwhile is
    deleted in favour of the first version.

    Args:
        run_id: the run that logged the model.
        model_artifact_path: the logged model's name in that run (e.g. ``model``).
        params: ``tracking.registered_model`` and ``tracking.champion_alias`` are used.
        benchmark: the benchmark ``r1`` was measured on.
        r1: the model's R1 there (percent).
        root: directory a relative ``paths.mlruns_dir`` is resolved against.

    Returns:
        The version (new, or the one registered before for this run and measurement) and the promotion decision.

    Raises:
        ValueError: ``r1`` is not a number in [0, 100].
    """
    from mlflow import MlflowClient

    if not (isinstance(r1, (int, float)) and 0.0 <= r1 <= 100.0):
        raise ValueError(f"r1 must be a percentage in [0, 100], got {r1!r}")
    name = params.tracking.registered_model
    redactor = Redactor.from_params(params)
    redactor.refuse_in_name(name, "tracking.registered_model")
    redactor.refuse_in_name(params.tracking.champion_alias, "tracking.champion_alias")
    with using_store(params, root) as uri, registry_lock(uri):
        client = MlflowClient(uri)
        key = {BENCHMARK_TAG: benchmark, R1_TAG: f"{float(r1):.4f}"}
        version = _registered_before(client, name, run_id, key)
        if version is None:
            version = _register(client, name, run_id, model_artifact_path, key)
        recorded = _recorded_result(client, name, version)
        if recorded is not None:
            return recorded
        return _decide(client, params, version, run_id, benchmark, float(r1))


REGISTRY_LOCK = ".registry.lock"


def registry_lock(uri: str) -> AbstractContextManager:
    """The lock serialising registrations in a local SQLite store (a file next to the database); none for a
    server, where :func:`_register` removes twins instead.
    """
    database = sqlite_path(uri)
    if database is None:
        return nullcontext()
    folder = database.absolute().parent
    return writer_lock(folder, "registration", "try again later", wait=120.0, lock_file=folder / REGISTRY_LOCK)


def _registered_before(client, name: str, run_id: str, key: dict[str, str]) -> int | None:
    """The first version of ``name`` registered from ``run_id`` with the same measurement (``key`` tags)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # no such registered model yet
        return None
    same = [int(v.version) for v in versions if all(v.tags.get(k) == value for k, value in key.items())]
    return min(same, default=None)


def _register(client, name: str, run_id: str, model_artifact_path: str, key: dict[str, str]) -> int:
    """Register a new version carrying its measurement; a twin registered meanwhile by another process wins when
    it is older (this one is deleted).
    """
    import mlflow

    registered = mlflow.register_model(logged_model_uri(client, run_id, model_artifact_path), name, tags=key)
    version = int(registered.version)
    first = _registered_before(client, name, run_id, key)
    if first is not None and first < version:
        client.delete_model_version(name, str(version))
        return first
    return version


def _recorded_result(client, name: str, version: int) -> Promotion | None:
    """The decision already taken for ``version`` (by an earlier registration of the same run), else None."""
    tags = client.get_model_version(name, str(version)).tags
    if "promotion_reason" not in tags:
        return None
    previous = tags.get(PREVIOUS_TAG) or ""
    return Promotion(
        name,
        version,
        tags.get("promoted") == "true",
        tags["promotion_reason"],
        int(previous) if previous.isdigit() else None,
        _as_float(tags.get(PREVIOUS_R1_TAG)),
    )


PREVIOUS_TAG = "previous_champion"
PREVIOUS_R1_TAG = "previous_champion_R1"


def _decide(client, params: Params, version: int, run_id: str, benchmark: str, r1: float) -> Promotion:
    """Compare ``version`` with the champion, move the alias if it is better, record the decision on the version."""
    name, alias = params.tracking.registered_model, params.tracking.champion_alias
    champion = current_champion(client, name, alias)
    promoted, reason = promotion_decision(benchmark, r1, champion)
    if promoted:
        client.set_registered_model_alias(name, alias, str(version))
    previous = {PREVIOUS_TAG: str(champion.version), PREVIOUS_R1_TAG: str(champion.r1)} if champion else {}
    for tag, value in {**previous, "promoted": str(promoted).lower(), "promotion_reason": reason}.items():
        client.set_model_version_tag(name, str(version), tag, value)
    client.update_model_version(
        name, str(version), description=version_description(client, run_id, benchmark, r1, reason)
    )
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    before = (champion.version, champion.r1) if champion else (None, None)
    return Promotion(name, version, promoted, reason, *before)


def pin_registry_uri(client, uri: str) -> tuple[str, str]:
    """``(label, pinned uri)``: ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` name a registered version
    (``models:/NAME/3``, which an alias moved later does not change); other URIs are returned unchanged.

    Raises:
        MlflowException: the registered model, version or alias does not exist.
    """
    rest = uri[len("models:/") :] if uri.startswith("models:/") else None
    if rest is None or rest.startswith("m-"):  # runs:/..., or a logged model id
        return uri, uri
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = rest.rpartition("/")
        if not name or not version.isdigit():
            return uri, uri
        client.get_model_version(name, version)  # raises when it does not exist
    return f"{name} v{version}", f"models:/{name}/{version}"
