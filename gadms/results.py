"""What each pipeline stage returns and the next one takes: typed, frozen values, free of Prefect and MLflow.

The pipeline reads as a chain of them::

    curate -> CuratedCorpus -> gate -> GatedCorpus -> version -> CorpusVersion -> pretrain -> TrainedModel
    -> evaluate direct -> Evaluation; finetune -> TrainedModel -> promote -> Promotion  => PipelineResult

:class:`ParamsSource` says where a run's parameters came from, for a child command (``gadms train`` under
torchrun) that loads them again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ParamsSource:
    """The parameter file and ``--set`` overrides a run's parameters were loaded from.

    The overrides are kept as the flow run records them: a credential as its ``[REDACTED:GADMS_SET_SECRET_<n>]``
    stand-in, which a child process of this one reveals from its environment. Nothing here is written to disk.
    """

    file: str
    overrides: tuple[str, ...] = ()

    def describe(self) -> str:
        """``FILE`` or ``FILE with O1 O2 ...``, for a run's log."""
        return self.file + (f" with {' '.join(self.overrides)}" if self.overrides else "")

    def cli_args(self) -> list[str]:
        """``--params FILE --set O1 --set O2 ...`` for a ``gadms`` command."""
        return ["--params", self.file, *(arg for item in self.overrides for arg in ("--set", item))]


@dataclass(frozen=True)
class CuratedCorpus:
    """The curated corpus: its folder, the counts over every shard and the one-line summary."""

    path: Path
    totals: Mapping[str, int]
    summary: str


@dataclass(frozen=True)
class GatedCorpus:
    """A corpus that passed the caption quality gate.

    Attributes:
        path: the corpus folder.
        summary: the gate's summary text.
        fingerprint: sha256 over the shards' names and bytes.
        report_dir: the gate's report folder (``report.html``, ``summary.txt``, ``gate.json``).
        report: the report kept for this corpus and these thresholds (``history/<fingerprint>-<thresholds>.html``).
    """

    path: Path
    summary: str
    fingerprint: str
    report_dir: Path
    report: Path


@dataclass(frozen=True)
class CorpusVersion:
    """The gated corpus as DVC tracks it.

    Attributes:
        gate: the gate it passed (its folder is the corpus).
        md5: DVC's directory hash (without ``.dir``).
        dvc_path: the corpus folder relative to the repository root, as ``data.dvc`` records it.
        files: number of files.
        size: total size in bytes.
    """

    gate: GatedCorpus
    md5: str
    dvc_path: Path
    files: int
    size: int

    @property
    def path(self) -> Path:
        """The corpus folder."""
        return self.gate.path


@dataclass(frozen=True)
class TrainedModel:
    """A trained and tracked model.

    Attributes:
        run_id: its MLflow run.
        path: the trained ``model.safetensors``.
        model_uri: the logged pyfunc (``models:/<model id>``).
        metrics: logged metric name -> value (``cuhk-pedes/R1``, ...).
        link: the MLflow run's page (set once the flow has logged it; empty before).
        promotion: the registry decision, when the stage registered the model itself (``gadms train finetune``).
    """

    run_id: str
    path: Path
    model_uri: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    link: str = ""
    promotion: Promotion | None = None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> TrainedModel:
        """The model a ``gadms train ... --result-json`` command wrote (``run_id``, ``model``, ``model_uri``, ...)."""
        metrics = {str(k): float(v) for k, v in dict(payload.get("metrics") or {}).items()}
        return cls(str(payload["run_id"]), Path(payload["model"]), str(payload["model_uri"]), metrics)

    def as_json(self) -> dict[str, Any]:
        """What ``--result-json`` writes, read back by :meth:`from_json`."""
        metrics = dict(self.metrics)
        return {"run_id": self.run_id, "model": str(self.path), "model_uri": self.model_uri, "metrics": metrics}

    def metric(self, benchmark: str, name: str) -> float:
        """``<benchmark>/<name>`` of :attr:`metrics` (``R1``, ``mAP``, ...)."""
        return float(self.metrics[f"{benchmark}/{name}"])


@dataclass(frozen=True)
class Evaluation:
    """One model evaluated on one benchmark, in its own MLflow run.

    Attributes:
        benchmark: the benchmark.
        setting: ``direct`` or ``finetuned``.
        run_id: the MLflow run of stage ``evaluate``.
        metrics: ``<benchmark>/R1``, ``<benchmark>/mAP``, ... (percent).
        link: the MLflow run's page (set once the flow has logged it).
    """

    benchmark: str
    setting: str
    run_id: str
    metrics: Mapping[str, float]
    link: str = ""

    def metric(self, name: str) -> float:
        """``<benchmark>/<name>`` of :attr:`metrics`."""
        return float(self.metrics[f"{self.benchmark}/{name}"])


@dataclass(frozen=True)
class Promotion:
    """A fine-tuned model registered as a version of ``model``, and whether it became the champion.

    Attributes:
        model: the registered model's name.
        version: the version number.
        promoted: whether the champion alias now points at it.
        reason: one line saying why it was or was not promoted.
        previous_version: the champion before, None when there was none.
        previous_r1: the previous champion's R1, None when there was none or it had no R1 tag.
    """

    model: str
    version: int
    promoted: bool
    reason: str
    previous_version: int | None = None
    previous_r1: float | None = None

    @property
    def uri(self) -> str:
        """``models:/<model>/<version>``."""
        return f"models:/{self.model}/{self.version}"

    @property
    def decision(self) -> str:
        """``promoted to champion`` or ``not promoted``."""
        return "promoted to champion" if self.promoted else "not promoted"


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline run produced.

    Attributes:
        flow_run: the Prefect flow run id.
        corpus: the curated corpus.
        version: the versioned (and gated) corpus.
        unchanged: the ``inputs unchanged: ...`` line when nothing was trained; empty otherwise.
        pipeline_run: the MLflow parent run (empty when unchanged).
        pretrained: the pre-trained model.
        direct: direct-transfer evaluation per benchmark.
        finetuned: the fine-tuned model per benchmark.
        promotion: the registry decision (None when no benchmark was there to fine-tune on).
        table: the results table as text.
    """

    flow_run: str
    corpus: CuratedCorpus
    version: CorpusVersion
    unchanged: str = ""
    pipeline_run: str = ""
    pretrained: TrainedModel | None = None
    direct: Mapping[str, Evaluation] = field(default_factory=dict)
    finetuned: Mapping[str, TrainedModel] = field(default_factory=dict)
    promotion: Promotion | None = None
    table: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The plain form ``gadms pipeline`` prints from (run ids, hashes, the table, the decision)."""
        common = {
            "curation": dict(self.corpus.totals),
            "gate": self.version.gate.summary,
            "data_hash": self.version.md5,
        }
        if self.unchanged:
            return {**common, "unchanged": self.unchanged, "flow_run": self.flow_run}
        promo = self.promotion
        return {
            **common,
            "pretrain_run": self.pretrained.run_id if self.pretrained else "",
            "pipeline_run": self.pipeline_run,
            "gate_report": str(self.version.gate.report),
            "finetune_runs": {name: model.run_id for name, model in self.finetuned.items()},
            "table": self.table,
            "promotion": None
            if promo is None
            else {"version": promo.version, "promoted": promo.promoted, "reason": promo.reason},
            "flow_run": self.flow_run,
        }


def plain(value: Any) -> Any:
    """Stage inputs as JSON-able values, for hashing them (cache keys, run folder names): parameters as their dump,
    stage results field by field with their type's name, paths as text.
    """
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, **plain(fields)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
