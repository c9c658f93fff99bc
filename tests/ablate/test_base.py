"""The base stage is built once, reused while its inputs stay the same, rebuilt when one changes."""

import torch

from gadms.ablate.base import base_key, ensure_base
from gadms.ablate.rows import derive, row_params
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from tests.ablate.conftest import tiny_params


def test_base_is_cached_and_rebuilt_on_change(tmp_path):
    params = tiny_params(tmp_path)
    first = ensure_base(params)
    assert first.built and first.weights.is_file()
    stamp = first.weights.stat().st_mtime_ns

    again = ensure_base(params)
    assert not again.built and again.weights == first.weights and again.weights.stat().st_mtime_ns == stamp

    # what does not shape the base (the rows, the seeds, tracking) leaves it alone
    unrelated = derive(
        params,
        [
            "ablate.rows=[cosine]",
            "ablate.seeds=[7]",
            "tracking.experiment=x",
            "model.gass.layers=2",
            "loss.mtp.weight=1",
        ],
        "test",
    )
    assert base_key(unrelated) == first.key and not ensure_base(unrelated).built

    for change in ("ablate.base.epochs=2", "ablate.base.corpus.identities=9", "augment.pad_crop=false"):
        changed = derive(params, [change], "test")
        assert base_key(changed) != first.key, change
    rebuilt = ensure_base(derive(params, ["ablate.base.epochs=2"], "test"))
    assert rebuilt.built and rebuilt.weights != first.weights
    assert first.weights.stat().st_mtime_ns == stamp  # the old base is kept


def test_rows_start_from_the_base_weights(tmp_path):
    params = tiny_params(tmp_path)
    base = ensure_base(params)
    p = row_params(params, "gass", 0, str(base.weights))
    fresh = PersonRetrievalModel(Architecture.from_config(p.model))
    loaded = PersonRetrievalModel(Architecture.from_config(p.model))
    loaded.load_clip_weights(p.model.pretrained)
    from safetensors.torch import load_file

    saved = load_file(str(base.weights))
    state = loaded.clip.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not torch.equal(fresh.clip.state_dict()["positional_embedding"], saved["positional_embedding"])
