"""Retraining that knows when nothing changed.

A pipeline run's inputs are the curated corpus (its DVC hash), the code (its git
commit) and the params that shape a result (everything but ``tracking`` and
``orchestration``, which only say where results go and when runs start). Their fingerprint is stored on every model
version the pipeline registers (tag ``inputs.fingerprint``). A scheduled retrain
whose fingerprint matches a registered version has nothing new to learn: it says
so and records nothing that looks like a new result.

Retrains start from the base weights (``model.pretrained``), never from the
current champion: a version then depends only on its corpus and params, so the DVC
hash and params.yaml reproduce it, and a bad week cannot compound into the next.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gadms.config import Params
from gadms.tracking.store import using_store

FINGERPRINT_TAG = "inputs.fingerprint"
PROMOTED_TAG = "promoted"  # the registry's record of the decision on a version (gadms.tracking.registry)
_NOT_INPUTS = ("tracking", "orchestration")


def inputs_fingerprint(params: Params, data_hash: str, code: str) -> str:
    """SHA-256 of the corpus hash, the code version and the result-shaping params (canonical JSON).

    Args:
        params: the run's params.
        data_hash: the curated corpus's DVC hash.
        code: the code's git commit (``unknown`` outside a repository).

    Returns:
        64 hex digits; equal inputs give equal fingerprints on any machine.
    """
    shaping = params.model_dump(mode="json", exclude=set(_NOT_INPUTS))
    text = json.dumps({"code": code, "data": data_hash, "params": shaping}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Unchanged:
    """A registered version trained on the same inputs, the current champion, and whether the version was promoted
    when it was registered (its ``promoted`` tag; None where the registry has no record)."""

    version: int
    champion: int | None
    promoted: bool | None = None

    def message(self) -> str:
        """The one line a retrain prints when it has nothing new to learn."""
        if self.champion is None:
            return f"inputs unchanged: model v{self.version} was trained on them; there is no champion"
        if self.champion == self.version:
            return f"inputs unchanged: model v{self.version} stays champion"
        if self.promoted:
            return (
                f"inputs unchanged since model v{self.version} (promoted then, champion no longer): "
                f"model v{self.champion} stays champion"
            )
        state = "not promoted" if self.promoted is False else "promotion not recorded"
        return f"inputs unchanged since model v{self.version} ({state}): model v{self.champion} stays champion"


def find_unchanged(params: Params, fingerprint: str, root: Path | None = None) -> Unchanged | None:
    """The registered version whose inputs had ``fingerprint``, or None: the champion when it is one of them, else
    the latest; whether it is champion comes from the registry's alias, whether it was promoted from its tag.

    Args:
        params: ``tracking.registered_model`` and ``tracking.champion_alias`` are used.
        fingerprint: from :func:`inputs_fingerprint`.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias = params.tracking.registered_model, params.tracking.champion_alias
    with using_store(params, root) as uri:
        client = MlflowClient(uri)
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return None
        same = {int(v.version): v.tags for v in versions if v.tags.get(FINGERPRINT_TAG) == fingerprint}
        if not same:
            return None
        try:
            champion: int | None = int(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            champion = None
    version = champion if champion in same else max(same)
    promoted = {"true": True, "false": False}.get(same[version].get(PROMOTED_TAG, ""))
    return Unchanged(version, champion, promoted)


def mark_version(params: Params, version: int, fingerprint: str, root: Path | None = None) -> None:
    """Record on a registered version which inputs it was trained on."""
    from mlflow import MlflowClient

    with using_store(params, root) as uri:
        MlflowClient(uri).set_model_version_tag(
            params.tracking.registered_model, str(version), FINGERPRINT_TAG, fingerprint
        )
