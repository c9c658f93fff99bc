"""A tracked fine-tuning run that diverges fails in MLflow and registers nothing: no version, no champion."""

import pytest
from mlflow import MlflowClient

from gadms.tracking.store import tracking_uri
from gadms.tracking.tracked_training import track_finetune_and_evaluate
from gadms.train.divergence import TrainingDiverged
from gadms.train.loop import FINAL_MODEL

FAST = {
    "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "amp": False},
    "augment": {"pad_crop": False, "color_jitter": False, "random_erasing": False},
}


def test_diverged_finetune_is_failed_and_never_registered(new_params, bench_root, tmp_path):
    params = new_params(**FAST, finetune={"epochs": 1, "batch_size": 4, "lr": 1e30})
    client = MlflowClient(tracking_uri(params))
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1, batch \d+ \(step \d+\): \w+ is nan"):
        track_finetune_and_evaluate(
            params, "cuhk-pedes", bench_root, None, tmp_path / "fine", "md5:bench", device="cpu"
        )
    assert not (tmp_path / "fine" / FINAL_MODEL).exists()
    assert client.search_model_versions(f"name = '{params.tracking.registered_model}'") == []
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "registry.version" not in runs[0].data.tags
