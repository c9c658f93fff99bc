"""Curation throughput per stage on this machine, and YOLO11n inference speed.

    python -m gadms.bench.curation [--scenes 600] [--yolo-batches 3]

Curates synthetic web scenes in one process (one core) with the default
params (``precomputed`` detection, ``attributes`` captions) and prints source
images/s of each stage: reading + decoding, detection (parsing the precomputed
boxes), filtering, crop + JPEG encode, captioning, writing; then of all the
non-model stages together (target: >= 200 images/s per core). Finally YOLO11n
and YOLO11n-pose (built from ultralytics' configs: same cost as trained
weights) at batch 8 on the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gadms.config import DetectorConfig, load_params
from gadms.curation.run import curate_shard
from gadms.curation.sources import list_source_shards
from gadms.synth.web import write_web_shards

STAGES = ("read_decode", "detect", "filter", "crop_encode", "caption", "write")


def curation_rates(scenes: int) -> tuple[int, defaultdict[str, float]]:
    """Curate ``scenes`` synthetic scenes; return images seen and seconds per stage."""
    params = load_params(Path("params.yaml") if Path("params.yaml").is_file() else None)
    with tempfile.TemporaryDirectory() as tmp:
        web = Path(tmp) / "web"
        write_web_shards(web, scenes, 0, params.synth, params.curation.filter, progress=False)
        seen, timings = 0, defaultdict[str, float](float)
        for shard in list_source_shards(web):
            report = curate_shard(shard, Path(tmp) / "out", params)
            seen += report.seen
            for stage, seconds in report.timings.items():
                timings[stage] += seconds
    return seen, timings


def yolo_rate(batches: int, batch: int = 8) -> dict[str, float]:
    """Images/s of YOLO11n detection and YOLO11n-pose on the CPU at ``batch`` (640x480 inputs)."""
    from gadms.curation.detect import YoloDetector

    torch.set_num_threads(1)
    cfg = DetectorConfig(
        backend="yolo",
        detector_weights=Path("yolo11n.yaml"),
        pose_weights=Path("yolo11n-pose.yaml"),
        batch_size=batch,
        device="cpu",
    )
    detector = YoloDetector(cfg)
    images = [np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8) for i in range(batch)]
    rates = {}
    for name, model, kwargs in (
        ("yolo11n detect", detector.detector, {"classes": [0]}),
        ("yolo11n-pose", detector.pose, {}),
    ):
        detector.run_model(model, images, **kwargs)  # warm-up
        started = time.perf_counter()
        for _ in range(batches):
            detector.run_model(model, images, **kwargs)
        rates[name] = batches * batch / (time.perf_counter() - started)
    return rates


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--yolo-batches", type=int, default=3)
    args = parser.parse_args()
    seen, timings = curation_rates(args.scenes)
    print(f"curation of {seen} synthetic 640x480 web images, one process")
    print(f"{'stage':<26} {'seconds':>8} {'images/s':>9}")
    for stage in STAGES:
        print(f"{stage:<26} {timings[stage]:>8.2f} {seen / max(timings[stage], 1e-9):>9.0f}")
    total = sum(timings[s] for s in STAGES)
    print(f"{'all non-model stages':<26} {total:>8.2f} {seen / total:>9.0f}")
    for name, rate in yolo_rate(args.yolo_batches).items():
        print(f"{name + ' (batch 8, 1 thread)':<26} {'':>8} {rate:>9.1f}")


if __name__ == "__main__":
    main()
