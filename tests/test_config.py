"""params.yaml -> typed, validated, frozen parameters; one-line errors naming the key; params.yaml and the
overlays (params.full/paper/irra.yaml) against the schema that holds the defaults."""

import re
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml

from gadms.config import (
    ConfigError,
    OptimizerConfig,
    OrchestrationConfig,
    Params,
    PathsConfig,
    Section,
    TrainConfig,
    flatten,
    load_params,
    params_from_dict,
    render_params,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def _raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_paper_params_hold_the_papers_numbers():
    p = load_params(REPO / "params.paper.yaml")
    f = p.curation.filter
    assert (f.min_short_side, f.min_aspect, f.max_aspect, f.min_confidence) == (90, 0.25, 0.5, 0.85)
    assert (f.min_keypoints, f.min_hip_keypoints, f.min_head_keypoints) == (8, 1, 2)
    m = p.model
    assert (m.backbone, m.image_height, m.image_width, m.context_length) == ("ViT-B-16", 384, 128, 77)
    assert (m.gass.layers, m.gass.scales) == (8, (1, 2))
    assert (m.masking.alpha_noise, m.masking.alpha_informative) == (0.2, 0.3)
    assert (p.loss.temperature, p.loss.mtp.weight) == (0.02, 0.4)
    o = p.train.optimizer
    assert (o.lr, o.betas, o.eps, o.weight_decay) == (1e-4, (0.9, 0.999), 1e-3, 4e-5)
    assert (p.train.epochs, p.train.batch_size, p.train.warmup_epochs) == (30, 512, 5)
    assert p.finetune.mlm_probability == 0.15
    assert (p.finetune.epochs, p.finetune.batch_size, p.finetune.lr) == (60, 64, 1e-5)
    assert not p.loss.itc.enabled and p.loss.sdm.enabled and p.loss.mtp.enabled
    assert p.model.gass.variant == "paper" and p.model.interaction.variant == "project"
    assert (p.model.masking.score_timing, p.model.masking.replacement) == ("fresh", "mask")


def test_full_scale_params_are_the_official_recipe():
    """params.full.yaml: rows 1-11 of issue 14 at the official scripts' values."""
    p = load_params(REPO / "params.full.yaml")
    m = p.model.masking
    assert (m.slope, m.noise_midpoint, m.informative_midpoint) == (20.0, 0.9, 0.1)
    assert (m.score_timing, m.initial_score) == ("previous_epoch", 0.85)
    assert (m.replacement, m.mtp_at_least_one) == ("bert", True)
    assert p.model.gass.variant == "official" and p.model.interaction.variant == "irra"
    t, o = p.train, p.train.optimizer
    assert (o.lr, o.eps, o.weight_decay, t.batch_size, t.gpus, p.loss.mtp.weight) == (1e-5, 1e-3, 4e-5, 1024, 8, 0.3)
    assert (t.grad_clip, t.lr_step, t.identity) == (0.0, "epoch", "caption")
    f = p.finetune
    assert (f.id_loss, p.loss.id.weight, f.mlm_weight, f.batch_size, f.sampler) == (True, 1.0, 1.0, 128, "random")
    assert (p.augment.erasing_max_area, p.augment.color_jitter) == (0.4, False)


def test_paper_and_official_files_differ_only_in_the_method_sections():
    paper, full = load_params(REPO / "params.paper.yaml"), load_params(REPO / "params.full.yaml")
    same = ("paths", "synth", "curation", "validation", "eval", "tracking", "versioning", "orchestration", "pipeline")
    for section in same:
        assert getattr(paper, section) == getattr(full, section), section


def test_full_scale_params_name_the_real_resources():
    """The paper's run: COYO shards, YOLO11 weights, vLLM endpoints, CLIP weights, 8 GPUs, remote MLflow and DVC."""
    p = load_params(REPO / "params.full.yaml")
    d = p.curation.detector
    assert (
        d.backend == "yolo"
        and d.detector_weights.name.startswith("yolo11")
        and d.pose_weights.name.startswith("yolo11")
    )
    assert p.curation.captioning.backend == "vlm" and p.curation.captioning.vlm_url.startswith("http")
    assert p.curation.templates.extractor == "llm" and p.curation.captioning.templates_file is not None
    assert p.model.pretrained and p.train.gpus == 8 and not p.pipeline.synthesize
    assert p.tracking.uri.startswith("http") and "://" in p.versioning.remote_url
    assert p.orchestration.task_runner == "dask" and p.orchestration.dask_address


def test_default_params_differ_from_the_paper_only_in_scale_and_optimiser():
    """The CPU default keeps every method number of the paper's text (masking, GASS, losses)."""
    demo, full = load_params(PARAMS), load_params(REPO / "params.paper.yaml")
    assert demo.curation.filter == full.curation.filter and demo.curation.crop == full.curation.crop
    assert demo.curation.captioning.captions_per_image == full.curation.captioning.captions_per_image
    assert demo.validation == full.validation
    assert demo.model.gass == full.model.gass and demo.model.masking == full.model.masking
    assert demo.loss.model_copy(update={"itc": full.loss.itc}) == full.loss


def test_params_file_sets_every_field_so_dvc_sees_every_number():
    """Every leaf of the schema appears in params.yaml (nothing silently defaulted)."""
    in_file = set()

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(name, value)
            else:
                in_file.add(name)

    walk("", _raw())
    assert set(flatten(load_params(PARAMS))) == in_file


@pytest.mark.parametrize(
    ("key_path", "value", "expected"),
    [
        (["model", "masking", "alpha_noise"], 1.5, "model.masking.alpha_noise: must be <= 1 (got 1.5)"),
        (["train", "optimizer", "lr"], -3e-4, "train.optimizer.lr: must be > 0 (got -0.0003)"),
        (["train", "epochs"], "ten", "train.epochs: input should be a valid integer"),
        (["curation", "filter", "min_keypoints"], 18, "curation.filter.min_keypoints: must be <= 17"),
        (
            ["model", "masking", "score"],
            "attention",
            "model.masking.score: input should be 'none', 'random', 'cosine' or 'gass'",
        ),
        (["loss", "sdm", "enabled"], "maybe", "loss.sdm.enabled: input should be a valid boolean"),
    ],
)
def test_invalid_value_names_the_key_in_one_line(key_path, value, expected):
    raw = _raw()
    node = raw
    for part in key_path[:-1]:
        node = node[part]
    node[key_path[-1]] = value
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw, "params.yaml")
    message = str(err.value)
    assert message.startswith("params.yaml: " + expected)
    assert "\n" not in message


def test_unknown_key_is_rejected_with_its_path():
    raw = _raw()
    raw["model"]["gass"]["layer"] = 8  # typo of "layers"
    with pytest.raises(ConfigError, match=r"^params\.yaml: model\.gass\.layer: unknown key$"):
        params_from_dict(raw, "params.yaml")


def test_cross_field_rules():
    raw = _raw()
    raw["curation"]["filter"]["min_aspect"] = 0.6
    with pytest.raises(ConfigError, match=r"curation\.filter: min_aspect must be <= max_aspect"):
        params_from_dict(raw, "p")
    raw = _raw()
    raw["synth"]["split_fractions"]["val"] = 0.3
    with pytest.raises(ConfigError, match=r"synth\.split_fractions: train \+ val \+ test must be 1"):
        params_from_dict(raw, "p")


def test_set_overrides_single_values_and_keeps_the_rest():
    p = load_params(
        PARAMS, ["train.optimizer.lr=3e-4", "model.gass.scales=[1, 2, 4]", "curation.detector.backend=yolo"]
    )
    assert p.train.optimizer.lr == 3e-4
    assert p.model.gass.scales == (1, 2, 4)
    assert p.curation.detector.backend == "yolo"
    assert p.train.optimizer.eps == 1e-8


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.lr=3e-4", r"train\.lr: unknown key"),
        ("train.optimizer.lr", r"expected KEY=VALUE"),
        ("train.optimizer.lr.x=1", r"train\.optimizer\.lr is a value, not a section"),
        ("model.masking.alpha_informative=2", r"model\.masking\.alpha_informative: must be <= 1"),
    ],
)
def test_bad_overrides_fail_clearly(override, match):
    with pytest.raises(ConfigError, match=match):
        load_params(PARAMS, [override])


def test_params_are_frozen():
    p = load_params(PARAMS)
    with pytest.raises(pydantic.ValidationError):
        p.train.epochs = 3  # type: ignore[misc]


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+ is not valid YAML"):
        load_params(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(listy)


def test_params_yaml_is_the_schema_rendered():
    """params.yaml is written from the schema (its defaults and descriptions), byte for byte, and loads to them."""
    rendered = render_params()
    assert PARAMS.read_bytes() == rendered.encode("utf-8"), (
        "params.yaml differs from the schema in gadms/config/ (the one source of defaults and comments): "
        "regenerate it with `make params` (or `.venv/bin/python -m gadms.config params.yaml`)"
    )
    assert load_params(PARAMS).model_dump(mode="json") == Params().model_dump(mode="json")


def test_every_description_in_the_schema_is_the_comment_of_its_key_in_params_yaml():
    text = PARAMS.read_text(encoding="utf-8")
    described = {key: field.description for key, field in _schema_fields(Params, "") if field.description}
    assert len(described) > 100
    for key, description in described.items():
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^ *{re.escape(name)}:.*  # {re.escape(description)}$", text, re.M), key


def _schema_fields(model, prefix):
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        yield key, field
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            yield from _schema_fields(field.annotation, key)


def test_rendering_writes_any_values_back_as_yaml_that_loads_to_them(tmp_path):
    """Changing a default in the schema changes params.yaml: floats, paths, URLs and odd strings round-trip."""
    changed = Params().model_copy(
        update={
            "train": TrainConfig(epochs=3, optimizer=OptimizerConfig(lr=1.5e-7, eps=1e20)),
            "paths": PathsConfig(web_dir="s3://bucket/shards #1"),
            "orchestration": OrchestrationConfig(schedule_cron="null", retry_delays_s=(0.5, 1e-4)),
        }
    )
    text = render_params(changed)
    assert "  epochs: 3                     # paper: 30\n" in text
    assert "    lr: 1.5e-7  " in text and "    eps: 1.0e+20  " in text
    (tmp_path / "p.yaml").write_text(text)
    assert load_params(tmp_path / "p.yaml") == changed


def test_python_m_gadms_config_prints_params_yaml_or_writes_it(tmp_path):
    run = [sys.executable, "-m", "gadms.config"]
    shown = subprocess.run(run, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shown.stdout == PARAMS.read_text(encoding="utf-8")
    subprocess.run([*run, "out.yaml"], check=True, cwd=tmp_path)
    assert (tmp_path / "out.yaml").read_bytes() == PARAMS.read_bytes()
    wrong = subprocess.run([*run, "a", "b"], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: python -m gadms.config [FILE]")
    unwritable = subprocess.run([*run, "missing/dir/p.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert (unwritable.returncode, unwritable.stderr) == (
        1,
        "error: missing/dir/p.yaml: cannot write (No such file or directory)\n",
    )


@pytest.mark.parametrize("name", ["params.full.yaml", "params.paper.yaml", "params.irra.yaml"])
def test_overlays_hold_only_what_differs_from_the_defaults(name):
    """Each recipe file sets only the keys it changes; a header says what it is for and how to use it."""
    text = (REPO / name).read_text(encoding="utf-8")
    defaults = flatten(Params())
    loaded = flatten(load_params(REPO / name))
    in_file = set()

    def walk(prefix, node):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(dotted, value)
            else:
                in_file.add(dotted)

    walk("", yaml.safe_load(text))
    same = sorted(key for key in in_file if loaded[key] == defaults[key])
    assert not same, f"{name} repeats the defaults of {same}"
    assert text.startswith("# ") and f"--params {name}" in text and "An overlay" in text


@pytest.mark.parametrize("name", ["params.full.yaml", "params.paper.yaml"])
def test_full_scale_overlays_keep_the_spec_numbers_they_take_from_the_defaults(name):
    """SPEC 2, 3 and 5.4 numbers that the overlays leave to the defaults."""
    p = load_params(REPO / name)
    f = p.curation.filter
    assert (f.min_short_side, f.min_aspect, f.max_aspect, f.min_confidence) == (90, 0.25, 0.5, 0.85)
    assert (f.min_keypoints, f.min_hip_keypoints, f.min_head_keypoints, f.keypoint_confidence) == (8, 1, 2, 0.5)
    assert p.curation.templates.random_members == 5 and p.curation.captioning.captions_per_image == 2
    o = p.train.optimizer
    assert (o.betas, o.eps, o.weight_decay, p.train.schedule) == ((0.9, 0.999), 1e-3, 4e-5, "cosine")
    assert (p.train.epochs, p.train.warmup_epochs, p.loss.temperature) == (30, 5, 0.02)
    m = p.model
    assert (m.image_height, m.image_width, m.context_length, m.gass.layers, m.gass.scales) == (384, 128, 77, 8, (1, 2))
    assert (m.masking.score, m.masking.alpha_noise, m.masking.alpha_informative) == ("gass", 0.2, 0.3)
    assert p.loss.sdm.enabled and p.loss.mtp.enabled and p.finetune.mlm_probability == 0.15


def test_web_dir_may_be_a_url_and_stays_one():
    from gadms.config import Params

    p = Params.model_validate({"paths": {"web_dir": "s3://bucket/shards"}})
    assert p.paths.web_dir == "s3://bucket/shards"  # Path would have made it s3:/bucket/shards
    assert Params.model_validate({"paths": {"web_dir": "work/web"}}).paths.web_dir == Path("work/web")
    assert load_params(REPO / "params.full.yaml").paths.web_dir == "s3://coyo-700m/shards"


def test_ablate_testbed_params():
    """params.ablate.yaml (issue 22): the bounds and 4 masking rows x 5 seeds from a hard-negative base on words
    the tiny model can check, every masking row at the same noise-mask rate, unseen identities."""
    p = load_params(REPO / "params.ablate.yaml")
    a = p.ablate
    assert a.rows == ("clean", "none", "random", "cosine", "gass", "gass-official") and a.seeds == (0, 1, 2, 3, 4)
    assert {a.corpus.vocabulary, a.held_out.vocabulary, a.base.corpus.vocabulary} == {"checkable"}
    assert a.base.hard_negatives and a.noise_mask_rate == 0.1
    assert a.base.enabled and p.model.pretrained is None and a.base.corpus.caption_noise == 0.0
    assert a.corpus.caption_noise > 0 and a.held_out.caption_noise == 0.0
    assert len({a.corpus.seed, a.held_out.seed, a.base.corpus.seed}) == 3


def test_ablate_refuses_repeated_rows_and_shared_seeds():
    with pytest.raises(ConfigError, match="ablate: .*must not repeat"):
        load_params(PARAMS, ["ablate.rows=[gass,gass]"])
    with pytest.raises(ConfigError, match="different seeds"):
        load_params(PARAMS, ["ablate.held_out.seed=1"])
