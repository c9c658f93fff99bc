"""Which model encodes a gallery and its queries: loaded from an MLflow URI, a run directory or a weights file.

A model's identity is the SHA-256 of its weights (tensor names, dtypes,
shapes and bytes, in name order), so the same weights have the same identity
whether they come from ``models:/gadms-person-retrieval@champion``, the run
directory that produced them or its ``model.safetensors``. An index records
the identity of the model that built it and refuses queries from any other.
For a registry URI the identity also names the registered model and version;
an alias is pinned to the version it pointed at, so an index keeps working
(with its own model) after the champion moves on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gadms.config import Params
from gadms.devices import resolve_device

if TYPE_CHECKING:  # importing them loads open_clip and torch: done where a model is built
    from gadms.model.retrieval import PersonRetrievalModel
    from gadms.search.text_encoder import TextEncoder

_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class SearchError(ValueError):
    """A search input (model, index, source, query) cannot be used; the message is one line."""


@dataclass(frozen=True)
class ModelIdentity:
    """What an index remembers of its model.

    Attributes:
        digest: SHA-256 of the weights (see the module docstring).
        label: for people, e.g. ``gadms-person-retrieval v3`` or the weights file name.
        source: how to load the same model again (a pinned ``models:/NAME/VERSION`` URI or an absolute path).
        architecture: the model's :class:`~gadms.model.retrieval.Architecture` fields.
    """

    digest: str
    label: str
    source: str
    architecture: dict

    def to_json(self) -> dict:
        """The identity as a JSON-ready dict."""
        return asdict(self)

    @property
    def embed_dim(self) -> int:
        """The width of the model's embeddings (its backbone's)."""
        from gadms.model.backbone import BACKBONES

        return BACKBONES[self.architecture["backbone"]].embed_dim

    @classmethod
    def from_json(cls, raw: dict) -> ModelIdentity:
        """Read back :meth:`to_json`'s dict."""
        return cls(str(raw["digest"]), str(raw["label"]), str(raw["source"]), dict(raw["architecture"]))


@dataclass
class SearchModel:
    """A loaded model in eval mode on its device, with its identity."""

    model: PersonRetrievalModel
    identity: ModelIdentity
    device: str


@dataclass
class TextSearcher:
    """An index's text tower alone (see :mod:`gadms.search.text_encoder`): what a query needs, loaded fast."""

    model: TextEncoder
    identity: ModelIdentity
    device: str


def weights_digest(model: PersonRetrievalModel) -> str:
    """SHA-256 over the model's tensors in name order (name, dtype, shape, bytes).

    Args:
        model: the model.

    Returns:
        The hex digest.
    """
    from gadms.search.text_encoder import tensors_digest

    return tensors_digest(model.state_dict())


def load_search_model(spec: str, params: Params, device: str = "auto", root: Path | None = None) -> SearchModel:
    """Load a model given as an MLflow model URI, a run directory, ``model.safetensors`` or ``checkpoint.pt``.

    Args:
        spec: e.g. ``models:/gadms-person-retrieval@champion``, ``models:/NAME/3``, ``runs:/ID/model``,
            ``runs/finetune`` or ``runs/finetune/model.safetensors``.
        params: selects the MLflow store (``tracking.uri`` / ``paths.mlruns_dir``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.

    Returns:
        The model in eval mode on the device, with its identity.

    Raises:
        SearchError: the URI or path does not lead to a gadms model.
    """
    if spec.startswith(MLFLOW_SCHEMES):
        model, label, pinned = _from_mlflow(spec, params, root)
    else:
        model, label, pinned = _from_path(Path(spec))
    identity = ModelIdentity(weights_digest(model), label, pinned, model.arch.to_dict())
    dev = resolve_device(device)
    return SearchModel(model.to(dev).eval(), identity, dev)


def load_query_model(
    directory: Path, identity: ModelIdentity, embed_dim: int, params: Params, device: str = "auto"
) -> SearchModel | TextSearcher:
    """The model for an index's queries: its stored text tower when it has one, else the whole model from its
    recorded source (indexes written before the text tower was stored; or a damaged one, with a warning).

    Args:
        directory: the index directory.
        identity: the model ``index.json`` records.
        embed_dim: the embedding width ``index.json`` records.
        params: selects the MLflow store for a registry source.
        device: as for :func:`load_search_model`.

    Raises:
        SearchError: the model cannot be loaded, or its embeddings are not ``embed_dim`` wide.
    """
    import sys

    from gadms.model.files import ModelFileError
    from gadms.search.text_encoder import TEXT_FILE, load_text_encoder

    path = Path(directory) / TEXT_FILE
    if path.is_file():
        try:
            encoder = load_text_encoder(path, identity.digest)
        except ModelFileError as exc:
            print(f"warning: {exc}; loading the whole model from {identity.source}", file=sys.stderr)
        else:
            if encoder.spec.embed_dim != embed_dim:
                raise SearchError(
                    f"{Path(directory) / 'index.json'}: embed_dim {embed_dim}, but model {identity.label} embeds in "
                    f"{encoder.spec.embed_dim} dimensions; the index metadata is damaged, rebuild the index"
                )
            dev = resolve_device(device)
            return TextSearcher(encoder.to(dev), identity, dev)
    return load_search_model(identity.source, params, device)


def _from_path(path: Path) -> tuple[PersonRetrievalModel, str, str]:
    """A model from a local file or run directory; its label is the path."""
    from gadms.train.recipes import load_any_model

    if not path.exists():
        raise SearchError(
            f"--model {path}: no such file or directory (give an MLflow model URI, a run directory or "
            "model.safetensors)"
        )
    try:
        model = load_any_model(path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise SearchError(
            f"--model {path}: not a gadms model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    return model, str(path), str(path.resolve())


def _from_mlflow(uri: str, params: Params, root: Path | None) -> tuple[PersonRetrievalModel, str, str]:
    """A model from the MLflow store named by ``params``: registry aliases are pinned to their version."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from gadms.model.retrieval import load_model
    from gadms.tracking.registry import pin_registry_uri
    from gadms.tracking.store import sqlite_path, tracking_uri, using_store

    database = sqlite_path(tracking_uri(params, root))
    if database is not None and not database.exists():  # reading a model never creates a store
        raise SearchError(
            f"--model {uri}: no MLflow store at {database} (nothing registered yet): run gadms pipeline, "
            "or pass --model PATH of a model.safetensors"
        )
    with using_store(params, root) as store:
        try:
            label, pinned = pin_registry_uri(MlflowClient(store), uri)
            with tempfile.TemporaryDirectory(prefix="gadms-model-") as scratch, _no_download_bar():
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=scratch))
                weights = sorted(local.rglob("*.safetensors"))
                if len(weights) != 1:
                    raise SearchError(
                        f"--model {uri}: expected one .safetensors weights file in the logged model, found "
                        f"{len(weights)}"
                    )
                return load_model(weights[0]), label, pinned
        except MlflowException as exc:
            raise SearchError(f"--model {uri}: {exc.message.splitlines()[0]} (store {store})") from None


@contextmanager
def _no_download_bar() -> Iterator[None]:
    """Silence MLflow's per-file download bar (a logged model carries the gadms code: a hundred files)."""
    saved = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = saved
