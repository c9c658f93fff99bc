"""A crash in pre-training resumes from the last checkpoint on the next run of the stage."""

from pathlib import Path

import pytest
import yaml

from gadms.config import load_params
from gadms.curation.run import curate
from gadms.synth.web import write_web_shards

REPO = Path(__file__).resolve().parents[2]
SMALL = ["train.epochs=2", "train.batch_size=8", "train.num_workers=0"]


class Crash(RuntimeError):
    pass


def _crash_after_first_epoch(log):
    raise Crash(f"killed after epoch {log.epoch + 1}")


@pytest.mark.slow
def test_pretraining_resumes_from_the_checkpoint_after_a_crash(tmp_path, monkeypatch):
    from gadms.results import CorpusVersion, GatedCorpus, ParamsSource
    from gadms.tracking.pipeline_stages import pretrain_dir, pretrain_stage
    from gadms.train.loop import CHECKPOINT, FINAL_MODEL
    from gadms.train.recipes import run_pretrain

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load((REPO / "params.yaml").read_text())))
    params = load_params("params.yaml", SMALL)
    write_web_shards(Path("web"), 40, 1, params.synth, params.curation.filter, progress=False)
    curate(Path("web"), Path("data"), params, progress=False)

    out = pretrain_dir(params, "abc123")
    with pytest.raises(Crash):
        run_pretrain(params, Path("data"), "curated", out, progress=False, on_epoch=_crash_after_first_epoch)
    assert (out / CHECKPOINT).is_file() and not (out / FINAL_MODEL).exists()

    gated = GatedCorpus(Path("data"), "passed", "f" * 64, Path("reports"), Path("reports/kept.html"))
    corpus = CorpusVersion(gated, "abc123", Path("data"), 0, 0)
    said: list[str] = []
    result = pretrain_stage(params, ParamsSource("params.yaml", tuple(SMALL)), corpus, out, log=said.append)
    assert said == [f"resuming pre-training from {out / CHECKPOINT}"]
    assert result.path == out / FINAL_MODEL and result.run_id

    clean = tmp_path / "clean"
    run_pretrain(params, Path("data"), "curated", clean, progress=False)
    assert (out / FINAL_MODEL).read_bytes() == (clean / FINAL_MODEL).read_bytes()  # resumed == uninterrupted
