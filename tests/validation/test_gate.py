"""The caption quality gate on small curated corpora: clean data passes, each defect fails its own check."""

import json

import pytest

from gadms.config import MostlyConfig, ValidationConfig
from gadms.reproducible_writes import ShardWriter
from gadms.validation import GateError, GateFailed, read_gate, require_passed_gate, run_quality_gate
from gadms.validation.corpus import corpus_fingerprint

from . import corpus_builder as cb

CHECKS = [
    "non_empty",
    "valid_text",
    "word_count",
    "no_speculation",
    "no_background",
    "mentions_person",
    "mentions_attribute",
    "no_placeholder",
    "duplicates",
    "crop_size",
    "crop_aspect",
]
CFG = ValidationConfig(batch_captions=150)  # 400 captions: three batches, so examples come from any of them


@pytest.fixture(scope="module")
def samples():
    return cb.clean_samples(200, captions_per_sample=2)


def _gate(tmp_path, samples, name="corpus", cfg=CFG):
    data = cb.write_corpus(tmp_path / name, samples)
    return data, run_quality_gate(data, cfg, tmp_path / f"{name}-report")


def test_clean_corpus_passes_every_check(tmp_path, samples):
    data, result = _gate(tmp_path, samples)
    assert [c.name for c in result.checks] == CHECKS
    assert result.passed and result.failed_checks == []
    assert all(c.unexpected_share == 0.0 for c in result.checks)
    assert (result.samples, result.captions) == (200, 400)
    assert result.docs_index is not None and result.docs_index.is_file()
    index = result.docs_index.read_text(encoding="utf-8")
    assert "validations/captions/" in index and "validations/crops/" in index
    assert "Caption quality gate: PASSED" in result.summary
    assert require_passed_gate(data, tmp_path / "corpus-report").fingerprint == corpus_fingerprint(data)


@pytest.mark.parametrize(
    "edit,check",
    [
        pytest.param(lambda s: cb.edit_captions(s, 10, cb.add_speculation), "no_speculation", id="speculation"),
        pytest.param(lambda s: cb.edit_captions(s, 50, cb.leave_placeholder), "no_placeholder", id="placeholder"),
    ],
)
def test_defect_fails_its_own_check_only(tmp_path, samples, edit, check):
    _, result = _gate(tmp_path, edit(samples))
    assert result.failed_checks == [check]
    failing = next(c for c in result.checks if c.name == check)
    assert failing.examples and failing.examples[0].startswith("00000.tar/000000: ")
    summary = (tmp_path / "corpus-report" / "summary.txt").read_text(encoding="utf-8")
    assert summary == result.summary
    assert f"FAILED ({check})" in summary.splitlines()[0]
    offending = edit(samples)[0]["captions"][0]
    assert offending != samples[0]["captions"][0]
    assert json.dumps(offending) in summary, "summary quotes an offending caption"


@pytest.mark.parametrize(
    "edit,check,share,example",
    [
        pytest.param(
            lambda s: cb.edit_captions(s, 10, cb.add_background),
            "no_background",
            0.05,
            'busy street."',
            id="background",
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 40, cb.make_empty), "non_empty", 0.0125, '00000.tar/000000: "   "', id="empty"
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 5, cb.make_duplicate),
            "duplicates",
            40 / 400,
            "40 copies, first at 00000.tar/000000",
            id="duplicates",
        ),
        pytest.param(
            lambda s: cb.edit_crops(s, 10, [95, 600]),
            "crop_aspect",
            0.1,
            "00000.tar/000000: crop 95x600 (w/h 0.16)",
            id="narrow-crops",
        ),
        pytest.param(
            lambda s: cb.edit_crops(s, 50, [60, 150]),
            "crop_size",
            0.02,
            "00000.tar/000000: crop 60x150",
            id="small-crops",
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 10, cb.drop_person),
            "mentions_person",
            0.05,
            '"Black t-shirt with jeans and sneakers."',
            id="no-person",
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 10, cb.drop_attribute),
            "mentions_attribute",
            0.05,
            "is walking forward near number 0",
            id="no-attribute",
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 10, cb.make_long),
            "word_count",
            0.05,
            "00000.tar/000000 (110 words): ",
            id="too-long",
        ),
        pytest.param(
            lambda s: cb.edit_captions(s, 100, cb.add_control_character),
            "valid_text",
            0.005,
            "\\u0007",
            id="control-char",
        ),
    ],
)
def test_each_defect_fails_on_the_right_check(tmp_path, samples, edit, check, share, example):
    _, result = _gate(tmp_path, edit(samples))
    assert result.failed_checks == [check]
    failing = next(c for c in result.checks if c.name == check)
    assert failing.unexpected_share == pytest.approx(share)
    assert example in failing.examples[0]
    assert check in result.summary.splitlines()[0] and failing.examples[0] in result.summary


def test_defect_share_within_mostly_passes(tmp_path, samples):
    # 5% speculative captions pass when the check tolerates 10%.
    cfg = ValidationConfig(mostly=MostlyConfig(no_speculation=0.9), batch_captions=150)
    _, result = _gate(tmp_path, cb.edit_captions(samples, 10, cb.add_speculation), cfg=cfg)
    spec = next(c for c in result.checks if c.name == "no_speculation")
    assert result.passed and spec.unexpected_share == pytest.approx(0.05)


def test_broken_samples_count_as_failing_rows(tmp_path, samples):
    broken = list(samples)
    broken[3] = b'{"captions": ["A man in a red coat.", '  # cut-off JSON
    broken[7] = {k: v for k, v in samples[7].items() if k != "captions"}
    broken[9] = dict(samples[9], captions=[])
    broken[11] = '{"captions": ["A man in a red \xff coat and black jeans."], "crop_size": [120, 300]}'.encode(
        "latin-1"
    )  # not UTF-8
    _, result = _gate(tmp_path, broken)
    checks = {c.name: c for c in result.checks}
    assert result.samples == 200 and result.captions == 400 - 4 * 2 + 4
    assert checks["non_empty"].unexpected_share == pytest.approx(3 / 396, abs=1e-6)
    assert [e.split(":")[0] for e in checks["non_empty"].examples] == [
        "00000.tar/000003",
        "00000.tar/000007",
        "00000.tar/000009",
    ]
    assert checks["valid_text"].examples == ['00000.tar/000011: "A man in a red \ufffd coat and black jeans."']
    assert checks["crop_size"].examples == ["00000.tar/000003: crop 0x0 (w/h unknown)"]
    assert set(result.failed_checks) == {"non_empty", "valid_text", "crop_size"}


def test_reports_are_deterministic(tmp_path, samples):
    data = cb.write_corpus(tmp_path / "corpus", cb.edit_captions(samples, 10, cb.add_speculation))
    report = tmp_path / "report"
    run_quality_gate(data, CFG, report)
    first = [(report / n).read_bytes() for n in ("summary.txt", "gate.json")]
    run_quality_gate(data, CFG, report)
    assert [(report / n).read_bytes() for n in ("summary.txt", "gate.json")] == first
    gate = json.loads(first[1])
    assert gate["passed"] is False and gate["failed_checks"] == ["no_speculation"]
    assert gate["fingerprint"] == corpus_fingerprint(data)
    thresholds = CFG.model_dump(mode="json")
    del thresholds["batch_captions"]  # how much is read at once is no threshold: the verdict does not depend on it
    assert gate["config"] == thresholds


def test_one_changed_byte_invalidates_the_gate(tmp_path, samples):
    data, result = _gate(tmp_path, samples)
    report = tmp_path / "corpus-report"
    assert require_passed_gate(data, report).passed
    shard = data / "00001.tar"
    raw = bytearray(shard.read_bytes())
    at = raw.index(b"navy") if b"navy" in raw else raw.index(b"red")
    raw[at] ^= 0x20  # one letter changes case
    shard.write_bytes(bytes(raw))
    assert corpus_fingerprint(data) != result.fingerprint
    with pytest.raises(GateFailed, match="changed since the gate passed") as err:
        require_passed_gate(data, report)
    assert "\n" not in str(err.value)


def test_fingerprint_covers_shard_names_and_order(tmp_path, samples):
    data = cb.write_corpus(tmp_path / "corpus", samples)
    before = corpus_fingerprint(data)
    assert corpus_fingerprint(data) == before
    (data / "00001.tar").rename(data / "00002.tar")
    assert corpus_fingerprint(data) != before


def test_require_passed_gate_refuses_missing_and_failed_verdicts(tmp_path, samples):
    data = cb.write_corpus(tmp_path / "corpus", cb.edit_captions(samples, 50, cb.leave_placeholder))
    report = tmp_path / "report"
    with pytest.raises(GateFailed, match="no verdict"):
        require_passed_gate(data, report)
    run_quality_gate(data, CFG, report)
    with pytest.raises(GateFailed, match="failed on .*: no_placeholder"):
        require_passed_gate(data, report)
    assert read_gate(report).failed_checks == ["no_placeholder"]
    (report / "gate.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(GateFailed, match="not a valid gate report"):
        require_passed_gate(data, report)


def test_missing_or_empty_corpus_is_a_gate_error(tmp_path):
    with pytest.raises(GateError, match="not found") as err:
        run_quality_gate(tmp_path / "nowhere", CFG, tmp_path / "report")
    assert "\n" not in str(err.value)
    (tmp_path / "no-tars").mkdir()
    with pytest.raises(GateError, match="no .tar shards"):
        run_quality_gate(tmp_path / "no-tars", CFG, tmp_path / "report")
    empty = tmp_path / "empty"
    with ShardWriter(empty / "00000.tar"):
        pass
    with pytest.raises(GateError, match="no samples"):
        run_quality_gate(empty, CFG, tmp_path / "report")
    with pytest.raises(GateError, match="not found"):
        corpus_fingerprint(tmp_path / "nowhere")


def test_unreadable_shard_is_a_gate_error(tmp_path, samples):
    data = cb.write_corpus(tmp_path / "corpus", samples)
    (data / "00001.tar").write_bytes((data / "00001.tar").read_bytes()[:3000])
    with pytest.raises(GateError, match="00001.tar: not a readable tar"):
        run_quality_gate(data, CFG, tmp_path / "report")
