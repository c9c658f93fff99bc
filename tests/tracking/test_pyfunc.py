"""The logged pyfunc, loaded back from the registry's champion alias, embeds like the model itself."""

import base64

import mlflow
import numpy as np
import pandas as pd
import pytest

from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import encode_images, encode_texts
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.pyfunc import image_bytes
from gadms.tracking.registry import register_and_maybe_promote
from gadms.tracking.store import using_store

CAPTIONS = [
    "A man in a red t-shirt and blue jeans.",
    "A woman with long black hair in a green coat carrying a yellow bag.",
]


@pytest.fixture(scope="module")
def champion(new_params, tiny_model):
    """The tiny model logged in a run, registered and promoted; returns (params, loaded pyfunc, run info)."""
    params = new_params()
    with tracked_run(params, "pyfunc", "finetune", None) as run:
        info = run.log_model(tiny_model)
    result = register_and_maybe_promote(run.run_id, "model", params, "cuhk-pedes", 12.5)
    with using_store(params):
        # CPU like the in-process reference (on a GPU, TF32 convolutions would differ by ~1e-3)
        loaded = mlflow.pyfunc.load_model(
            f"models:/{params.tracking.registered_model}@{params.tracking.champion_alias}",
            model_config={"device": "cpu"},
        )
    return params, loaded, info, result


def test_registered_champion_embeds_text_like_the_model(champion, tiny_model):
    _, loaded, _, result = champion
    assert result.promoted and result.version == 1
    got = loaded.predict(pd.DataFrame({"text": CAPTIONS}))
    want = encode_texts(tiny_model, CAPTIONS).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_images_as_bytes_or_base64_embed_like_the_model(champion, tiny_model, bench_root):
    _, loaded, _, _ = champion
    paths = load_benchmark("cuhk-pedes", bench_root, "test").images[:3]
    raw = [p.read_bytes() for p in paths]
    want = encode_images(tiny_model, paths).numpy()
    np.testing.assert_allclose(loaded.predict(pd.DataFrame({"image": raw})), want, atol=1e-5)
    encoded = [base64.b64encode(b).decode() for b in raw]
    np.testing.assert_allclose(loaded.predict(pd.DataFrame({"image": encoded})), want, atol=1e-5)


def test_signature_and_input_example_are_logged(champion):
    params, _, info, _ = champion
    inputs = {c.name: c.type.name for c in info.signature.inputs.inputs}
    assert inputs == {"text": "string", "image": "binary"}
    assert info.signature.outputs.inputs[0].shape == (-1, 64)
    with using_store(params):
        example = mlflow.models.Model.load(info.model_uri).load_input_example(
            mlflow.artifacts.download_artifacts(info.model_uri)
        )
    assert list(example.columns) == ["text"]


def test_input_needs_exactly_one_known_column(champion):
    _, loaded, _, _ = champion
    with pytest.raises(Exception, match="exactly one of the columns"):
        loaded.predict(pd.DataFrame({"text": ["a"], "image": [b"x"]}))
    with pytest.raises(ValueError, match="base64"):
        image_bytes("not base64!")
