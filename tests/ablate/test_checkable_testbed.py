"""Issue 22's testbed: the hard-negative base, the ceiling check and rows calibrated to one noise-mask rate."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gadms.ablate.base import base_key, ensure_base
from gadms.ablate.calibrate import calibrate, midpoint_for
from gadms.ablate.ceiling import Ceiling, ceiling_line, check_ceiling, format_ceiling, pair_counts
from gadms.ablate.cells import Plan, cell_key
from gadms.ablate.grounding import grounding_loss, hard_negatives, read_checkable
from gadms.ablate.rows import derive, row_params
from gadms.ablate.testbed import build_corpus
from gadms.config import ConfigError
from gadms.model.masking import noise_mask_probability
from gadms.synth.checkable import SLOTS
from tests.ablate.conftest import tiny_params

CHECKABLE = {"vocabulary": "checkable"}
SPLITS = {"train": 0.1, "val": 0.1, "test": 0.8}


def checkable_params(tmp, **ablate):
    raw = {
        "out_dir": str(tmp / "ablate"),
        "corpus": {"identities": 10, "seed": 1, "caption_noise": 0.5, **CHECKABLE},
        "held_out": {
            "identities": 10,
            "seed": 2,
            "split_fractions": {"train": 0.1, "val": 0.1, "test": 0.8},
            **CHECKABLE,
        },
        "base": {
            "epochs": 2,
            "cache_dir": str(tmp / "base"),
            "hard_negatives": True,
            "corpus": {"identities": 12, "seed": 3, "caption_noise": 0.0, **CHECKABLE},
        },
        "ceiling": {"captions": 20},
        **ablate,
    }
    return tiny_params(tmp, ablate=raw, model={"context_length": 24})


def test_grounding_loss_punishes_a_hard_negative_close_to_the_image():
    torch.manual_seed(0)
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    text = image + 0.1 * text
    person = torch.arange(4)
    far = -image[:, None, :].repeat(1, 4, 1)
    close = image[:, None, :].repeat(1, 4, 1) + 0.05 * torch.randn(4, 4, 8)
    assert grounding_loss(image, text, close, person, 0.1) > grounding_loss(image, text, far, person, 0.1) + 0.5


def test_hard_negatives_swap_one_slot_each(tmp_path):
    params = checkable_params(tmp_path)
    corpus = build_corpus("corpus", params.ablate.base.corpus, params.synth, tmp_path / "c").root
    data = read_checkable(corpus, "train", 128, 64)
    rng = np.random.default_rng(0)
    for k in range(len(data.captions)):
        negatives = hard_negatives(data, k, rng)
        assert len(negatives) == len(SLOTS) and data.captions[k] not in negatives
        for negative in negatives:  # one colour word differs, or a bag was added
            a, b = data.captions[k].split(), negative.split()
            assert (len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1) or "bag" in negative


def test_hard_negatives_need_the_checkable_corpus(tmp_path):
    with pytest.raises(ConfigError, match="hard_negatives needs"):
        tiny_params(tmp_path, ablate={"base": {"hard_negatives": True}})
    with pytest.raises(ConfigError, match="noise_mask_rate calibrates"):
        tiny_params(tmp_path, ablate={"noise_mask_rate": 0.1})
    with pytest.raises(ConfigError, match="ablate.held_out: gallery one-slot needs vocabulary checkable"):
        tiny_params(tmp_path, ablate={"held_out": {"gallery": "one-slot"}})
    params = checkable_params(tmp_path)  # the gallery is part of the held-out corpus's identity, not the base's
    families = derive(params, ["ablate.held_out.gallery=one-slot"], "test")
    assert base_key(families) == base_key(params)
    corpora = [build_corpus("held-out", p.ablate.held_out, p.synth, tmp_path / "data") for p in (params, families)]
    assert corpora[0].key != corpora[1].key


def test_same_slot_auroc_pairs_and_the_verdict():
    assert pair_counts([0.1, 0.2], [0.3, 0.2]) == (3.5, 4)
    figures = {
        "auroc": {**{s: 0.9 for s in SLOTS}, "pooled": 0.9},
        "lowering": {**{s: 0.95 for s in SLOTS}, "all": 0.95},
    }
    good = Ceiling(**figures, captions=10, wrong_words=10, passed=True, min_auroc=0.85, min_lowering=0.9, seconds=1)
    assert ceiling_line(good) is None and "ceiling PASS" in format_ceiling(good)
    bad = Ceiling(**figures, captions=10, wrong_words=10, passed=False, min_auroc=0.95, min_lowering=0.9, seconds=1)
    assert "not comparable" in ceiling_line(bad) and "ceiling FAIL" in format_ceiling(bad)


def test_midpoint_reaches_the_rate():
    scores = torch.rand(64, 20, generator=torch.Generator().manual_seed(0))
    valid = torch.ones_like(scores, dtype=torch.bool)
    for rate in (0.05, 0.1, 0.15):
        mid = midpoint_for(scores, valid, 0.2, 10.0, rate)
        assert abs(float(noise_mask_probability(scores, 0.2, 10.0, mid).mean()) - rate) < 1e-4


@pytest.mark.slow
def test_hard_negative_base_ceiling_and_calibrated_rows(tmp_path):
    params = checkable_params(tmp_path, rows=["none", "random", "gass"], noise_mask_rate=0.1)
    plain = derive(params, ["ablate.base.hard_negatives=false"], "test")
    assert base_key(params) != base_key(plain)
    base = ensure_base(params)
    assert base.built and base.weights.is_file()

    result = check_ceiling(params)
    assert set(result.auroc) == {*SLOTS, "pooled"} and 0 <= result.auroc["pooled"] <= 1
    assert result.captions == 20 and result.wrong_words > 0
    strict = derive(params, ["ablate.ceiling.min_auroc=1.0", "ablate.ceiling.min_lowering=1.0"], "test")
    assert not check_ceiling(strict).passed
    lax = derive(params, ["ablate.ceiling.min_auroc=0.0", "ablate.ceiling.min_lowering=0.0"], "test")
    assert check_ceiling(lax).passed

    corpus = build_corpus("corpus", params.ablate.corpus, params.synth, tmp_path / "ablate" / "data").root
    found = calibrate(params, params.ablate.rows, base.weights, corpus)
    assert set(found) == {"random", "gass"}  # none masks nothing
    for c in found.values():
        assert abs(c.rate - 0.1) < 1e-3 and c.selectivity > 0
    assert found["random"].midpoint != found["gass"].midpoint
    cell = row_params(params, "gass", 0, None, (found["gass"].override(),))
    assert cell.model.masking.noise_midpoint == pytest.approx(found["gass"].midpoint, abs=1e-6)
    plan = Plan(params, corpus, "cuhk-pedes", {}, None, tmp_path, "k")
    calibrated = Plan(params, corpus, "cuhk-pedes", {}, None, tmp_path, "k", {"gass": (found["gass"].override(),)})
    assert cell_key(plan, "gass", 0) != cell_key(calibrated, "gass", 0)


@pytest.mark.slow
def test_ceiling_command_prints_the_check_and_refuses_a_full_held_out(tmp_path):
    from gadms.cli import app

    params = checkable_params(tmp_path)
    file = tmp_path / "p.yaml"
    file.write_text(params.model_dump_json())
    result = CliRunner().invoke(
        app, ["ablate", "ceiling", "--params", str(file), "--set", "ablate.ceiling.min_auroc=0"]
    )
    assert "occlusion AUROC" in result.output and "top_color" in result.output
    assert ("ceiling PASS" in result.output) == (result.exit_code == 0)
    bad = CliRunner().invoke(
        app, ["ablate", "ceiling", "--params", str(file), "--set", "ablate.held_out.vocabulary=full"]
    )
    assert bad.exit_code == 2 and "needs ablate.held_out.vocabulary: checkable" in bad.output


def test_bounds_line_needs_the_gap_over_three_seed_stds():
    from gadms.ablate.compare import bounds_line, pairwise_lines

    def cell(row, seed, r1):
        return {"row": row, "seed": seed, "metrics": {"b": {"R1": r1}}}

    wide = [cell("clean", s, 60 + s) for s in range(3)] + [cell("none", s, 40 + s) for s in range(3)]
    assert "row differences can count" in bounds_line(wide, ["clean", "none"], "b")
    narrow = [cell("clean", s, 41 + s) for s in range(3)] + [cell("none", s, 40 + s) for s in range(3)]
    assert "no difference between rows counts" in bounds_line(narrow, ["clean", "none"], "b")
    rows = [cell("gass", s, 50 + s) for s in range(3)] + [cell("cosine", s, 50 + 2 * s - 1) for s in range(3)]
    (line,) = pairwise_lines(rows, [("gass", "cosine")], "b")
    assert "+1.00 +0.00 -1.00" in line and "ahead on 1/3 seeds" in line and line.endswith("; paired t 0.00 (2 df)")
    steady = [cell("gass", s, 50 + s) for s in range(3)] + [cell("cosine", s, 49 + s + 0.5 * s) for s in range(3)]
    (line,) = pairwise_lines(steady, [("gass", "cosine")], "b")  # diffs 1, 0.5, 0: mean 0.5, sd 0.5
    assert line.endswith(f"; paired t {0.5 / (0.5 / 3**0.5):.2f} (2 df)")


@pytest.mark.slow
def test_table_has_the_bounds_the_calibration_and_says_when_the_ceiling_fails(tmp_path):
    import json

    from gadms.ablate.run import run_ablation

    params = checkable_params(tmp_path, rows=["clean", "none", "gass"], seeds=[0], noise_mask_rate=0.1)
    params = derive(params, ["ablate.ceiling.min_auroc=1.0"], "test")  # a ceiling no base reaches
    summary, text, ablation = run_ablation(params, log=lambda _: None)
    assert {s.row for s in summary} == {"clean", "none", "gass"}
    assert "rows are not comparable" in text and "selectivity" in text and "bounds (cuhk-pedes R1)" in text
    assert "gass - none" in text
    clean = ablation.plan.clean_corpus
    assert clean is not None and clean != ablation.plan.corpus
    truth = json.loads((clean / "CUHK-PEDES" / "synthetic_truth.json").read_text())["records"]
    noisy = json.loads((ablation.plan.corpus / "CUHK-PEDES" / "synthetic_truth.json").read_text())["records"]
    assert not any(spans for r in truth for spans in r["noise_spans"])
    assert any(spans for r in noisy for spans in r["noise_spans"])
    assert [r["file_path"] for r in truth] == [r["file_path"] for r in noisy]  # the same images
    result = json.loads((ablation.plan.out / "results" / "gass-seed0.json").read_text())
    assert any(o.startswith("model.masking.noise_midpoint=") for o in result["overrides"])
    end = result["masking_end"]  # the drift: the rate and selectivity again, with the trained model
    assert 0 < end["rate"] < 1 and end["selectivity"] > 0
    for row in ("none", "clean"):
        assert "masking_end" not in json.loads((ablation.plan.out / "results" / f"{row}-seed0.json").read_text())
    assert "p(mask) end" in text and f"{end['selectivity']:.2f}x" in text
    from mlflow import MlflowClient

    from gadms.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri(params))
    children = client.search_runs(
        [client.get_experiment_by_name(params.tracking.experiment).experiment_id],
        f"tags.`mlflow.parentRunId` = '{ablation.tracker.parent_id}'",
    )
    logged = {r.data.tags["ablate.row"]: r.data.metrics for r in children}
    assert logged["gass"]["masking/selectivity_end"] == pytest.approx(end["selectivity"])
    assert logged["gass"]["masking/p_mask_end"] == pytest.approx(end["rate"])
    assert "masking/p_mask_end" not in logged["none"]


def test_the_table_shows_each_rows_masking_after_training():
    from gadms.ablate.report import summarise, to_csv, to_markdown

    def cell(row, seed, end=None):
        metrics = {"b": {m: 50.0 + seed for m in ("R1", "R5", "R10", "mAP", "mINP")}}
        return {"row": row, "seed": seed, "metrics": metrics, **({"masking_end": end} if end else {})}

    results = [
        cell("none", 0),
        cell("none", 1),
        cell("gass", 0, {"rate": 0.10, "selectivity": 2.0}),
        cell("gass", 1, {"rate": 0.14, "selectivity": 1.0}),
    ]
    summary = summarise(results, ["none", "gass"])
    assert summary[0].masking == {} and summary[1].masking == pytest.approx({"rate": 0.12, "selectivity": 1.5})
    lines = to_markdown(summary).splitlines()
    assert lines[0].endswith("| p(mask) end | selectivity end |")
    assert lines[2].endswith("| - | - |") and lines[3].endswith("| 0.120 | 1.50x |")
    assert to_csv(summary).splitlines()[2].endswith(",0.1200,1.5000")


def test_a_killed_grounded_base_resumes_to_the_same_weights(tmp_path):
    from gadms.ablate.grounding import train_grounded

    params = checkable_params(tmp_path)
    corpus = build_corpus("corpus", params.ablate.base.corpus, params.synth, tmp_path / "data").root
    straight, _ = train_grounded(params, corpus)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(line):
        if line.startswith("grounded base epoch 1/"):
            raise Killed

    checkpoint = tmp_path / "grounded.pt"
    with pytest.raises(Killed):
        train_grounded(params, corpus, kill_after_first_epoch, checkpoint, "k")
    lines = []
    resumed, history = train_grounded(params, corpus, lines.append, checkpoint, "k")
    assert lines[0].startswith("grounded base: resuming after epoch 1/2") and len(history) == 2
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    checkpoint.write_bytes(b"not a checkpoint")  # damaged: one line, and the build starts over
    lines.clear()
    train_grounded(params, corpus, lines.append, checkpoint, "k")
    assert str(checkpoint) in lines[0] and lines[0].endswith("the base starts over")
    assert lines[1].startswith("grounded base epoch 1/2")
