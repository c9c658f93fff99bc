"""The services around a run: MLflow tracking, DVC versioning, Prefect orchestration and the main job."""

from __future__ import annotations

import functools
import posixpath
import zoneinfo
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from gadms.config.base import MLFLOW_ALIAS, MLFLOW_NAME_CHARS, MLFLOW_VERSION_ALIAS, Section
from gadms.safe_yaml import shorten


class TrackingConfig(Section):
    uri: Optional[str] = Field(
        None, description="MLflow tracking server; null: sqlite under mlruns/ (MLFLOW_TRACKING_URI wins)"
    )
    experiment: str = Field("gadms", min_length=1)
    registered_model: str = Field("gadms-person-retrieval", min_length=1)
    champion_alias: str = Field("champion", min_length=1)

    @model_validator(mode="after")
    def _no_credentials_in_names(self) -> "TrackingConfig":
        from gadms.credentials import find_credential

        for key in ("experiment", "registered_model", "champion_alias"):
            kind = find_credential(getattr(self, key))
            if kind:
                raise ValueError(f"tracking.{key} holds {kind}; a name is shown to everyone and must hold no secret")
        return self

    @model_validator(mode="after")
    def _mlflow_names(self) -> "TrackingConfig":
        """MLflow's rules for the names, checked at load (it refuses them at registration); after the secret check."""
        for key, rule in (
            ("registered_model", mlflow_model_name_problem),
            ("champion_alias", mlflow_alias_problem),
            ("experiment", lambda name: "must be at most 500 characters (MLflow's limit)" if len(name) > 500 else None),
        ):
            problem = rule(getattr(self, key))
            if problem:
                raise ValueError(f"tracking.{key}: {problem}")
        return self


def mlflow_model_name_problem(value: str) -> str | None:
    """What MLflow's registry would refuse in a registered model name (None: nothing)."""
    bad = [c for c in MLFLOW_NAME_CHARS if c in value]
    if not value.strip() or len(value) > 256:
        return "must be 1 to 256 characters, not only spaces (MLflow's limit)"
    if bad:
        return f"MLflow refuses {bad[0]!r} in a registered model name (got {shorten(value)})"
    norm = posixpath.normpath(value)
    if norm != value or norm == "." or norm.startswith(".."):
        return f"MLflow refuses a model name that reads as a path like {shorten(value)}"
    return None


def mlflow_alias_problem(value: str) -> str | None:
    """What MLflow refuses in an alias: other than letters, digits, ``_``, ``-``; ``latest``; version-like ``v1``."""
    if not MLFLOW_ALIAS.fullmatch(value) or len(value) > 255:
        return f"{shorten(value)} is not an MLflow alias: 1 to 255 letters, digits, '_' or '-'"
    if value.lower() == "latest" or MLFLOW_VERSION_ALIAS.fullmatch(value):
        return f"{value!r} is reserved by MLflow ('latest' and version aliases like 'v1'); pick another"
    return None


class VersioningConfig(Section):
    remote_name: str = Field("local", min_length=1)
    remote_url: str = Field(
        ".dvc-storage", min_length=1, description="default remote: a local directory, no set-up needed"
    )


class OrchestrationConfig(Section):
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="thread | dask: how curation fans out over shards"
    )
    max_workers: int = Field(2, ge=1, description="threads, or workers of a local Dask cluster")
    dask_address: Optional[str] = Field(
        None, description="an existing Dask scheduler (tcp://host:8786); null starts a LocalCluster"
    )
    retries: int = Field(3, ge=0, description="tasks that talk to services (captioning endpoint, DVC remote)")
    retry_delays_s: tuple[float, ...] = (2.0, 5.0, 15.0)
    cache_results: bool = Field(True, description="re-running resumes after the last finished stage")
    schedule_cron: str = Field("0 3 * * 1", description="retraining deployment: Mondays 03:00")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        """An IANA time zone name, as Prefect's schedules require (``Europe/Berlin``, ``UTC``)."""
        return valid_time_zone(value)

    @field_validator("retry_delays_s")
    @classmethod
    def _delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """Waits between retries: none negative."""
        if any(d < 0 for d in value):
            raise ValueError("every delay must be >= 0")
        return value


def valid_time_zone(value: str) -> str:
    """``value`` if it is an IANA time zone name Prefect accepts, else a ``ValueError`` saying so.

    Prefect checks schedules against :func:`zoneinfo.available_timezones`, so a name like ``utc`` or
    ``America`` (a folder of the database) is refused here too.
    """
    if value not in _time_zones():
        raise ValueError(f"{shorten(value)} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")
    return value


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    """The IANA names this machine's time zone database holds (read once)."""
    return frozenset(zoneinfo.available_timezones())


class PipelineConfig(Section):
    synthesize: bool = Field(True, description="build the synthetic world first (web shards + benchmark)")
    web_scenes: int = Field(300, ge=1)
    benchmark_identities: int = Field(120, ge=2)
