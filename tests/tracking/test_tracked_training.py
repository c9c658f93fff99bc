"""The tracked stages end to end on the synthetic world: pre-train (1 epoch) on a tiny curated corpus with
direct transfer, then fine-tune (1 epoch), evaluate, register and promote, nested under a pipeline run."""

import io
import json
import tarfile
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import METRICS, evaluate_split
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.store import tracking_uri, using_store
from gadms.tracking.tracked_training import track_finetune_and_evaluate, track_pretrain
from gadms.train.recipes import load_any_model

FAST = {
    "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "amp": False},
    "finetune": {"epochs": 1, "batch_size": 8},
    "augment": {"pad_crop": False, "color_jitter": False, "random_erasing": False},
    "eval": {"benchmarks": ["cuhk-pedes", "rstpreid"]},  # rstpreid is absent: skipped, not an error
}


def _write_curated(bench_root: Path, out: Path) -> Path:
    """A one-shard curated corpus from the benchmark's train images (KEY.jpg + KEY.json with captions)."""
    split = load_benchmark("cuhk-pedes", bench_root, "train")
    out.mkdir(parents=True)
    with tarfile.open(out / "00000.tar", "w") as shard:
        for i, image in enumerate(split.images):
            captions = [c for c, k in zip(split.captions, split.caption_image) if k == i]
            for name, data in (
                (f"{i:06d}.jpg", image.read_bytes()),
                (f"{i:06d}.json", json.dumps({"captions": captions}).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                shard.addfile(info, io.BytesIO(data))
    return out


def _artifacts(client, run_id, path=""):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


@pytest.mark.slow
def test_pretrain_then_finetune_log_everything_and_promote(new_params, bench_root, tmp_path):
    params = new_params(**FAST, paths={"benchmarks_dir": str(bench_root)})
    client = MlflowClient(tracking_uri(params))
    corpus = _write_curated(bench_root, tmp_path / "curated")
    with tracked_run(params, "pipeline", "pipeline", "md5:corpus") as pipeline:
        pre = track_pretrain(
            params,
            corpus,
            tmp_path / "pre",
            "md5:corpus",
            device="cpu",
            parent_run_id=pipeline.run_id,
            gate_summary="all checks passed",
        )
        fine = track_finetune_and_evaluate(
            params,
            "cuhk-pedes",
            bench_root,
            pre.path,
            tmp_path / "fine",
            "md5:bench",
            device="cpu",
            parent_run_id=pipeline.run_id,
        )

    run = client.get_run(pre.run_id)
    assert run.data.tags["mlflow.parentRunId"] == pipeline.run_id
    assert (run.data.tags["stage"], run.data.tags["corpus.format"], run.data.tags["dvc.data_hash"]) == (
        "pretrain",
        "curated",
        "md5:corpus",
    )
    assert run.data.tags["direct_transfer.benchmarks"] == "cuhk-pedes"
    assert [m.step for m in client.get_metric_history(pre.run_id, "train/sdm_loss")] == [1]
    test_split = load_benchmark("cuhk-pedes", bench_root, "test")
    direct = evaluate_split(load_any_model(pre.path), test_split)
    assert {m: run.data.metrics[f"cuhk-pedes/{m}"] for m in METRICS} == pytest.approx(direct, abs=0.005)  # 2 dp
    assert run.data.tags["setting"] == "direct"
    artifacts = _artifacts(client, pre.run_id)
    assert {"figures/token_scores.png", "quality/gate_summary.md", "params.yaml"} <= set(artifacts)
    assert len([a for a in artifacts if a.startswith("figures/direct/cuhk-pedes/query_")]) == 4

    run = client.get_run(fine.run_id)
    assert run.data.tags["mlflow.parentRunId"] == pipeline.run_id
    assert (run.data.tags["stage"], run.data.tags["benchmark"], run.data.tags["init"]) == (
        "finetune",
        "cuhk-pedes",
        str(pre.path),
    )
    assert set(fine.metrics) == {f"cuhk-pedes/{m}" for m in METRICS}  # the same columns as the direct run
    assert (
        run.data.metrics["cuhk-pedes/R1"] == fine.metrics["cuhk-pedes/R1"] and run.data.tags["setting"] == "finetuned"
    )
    assert fine.promotion is not None and fine.promotion.promoted and fine.promotion.version == 1
    assert (run.data.tags["registry.version"], run.data.tags["registry.promoted"]) == ("1", "true")
    with using_store(params):
        loaded = mlflow.pyfunc.load_model(
            f"models:/{params.tracking.registered_model}@{params.tracking.champion_alias}"
        )
    assert loaded.metadata.run_id == fine.run_id
