"""Parameters are checked as a whole before any work: impossible combinations are one line naming the keys.

Through the real console entry point (``run_gadms``): each impossible combination of params.yaml keys ends
``gadms params show`` and the training commands with exit status 2 and one ``error:`` line that names every key
involved; a device this machine lacks, a batch larger than the data and a ``--resume`` with changed
result-shaping settings are refused the same way before anything is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from gadms.config import BACKBONE_SHAPES, CLIP_CONTEXT, ConfigError, load_params, params_from_dict
from gadms.devices import DeviceError, check_device
from gadms.model.files import ModelFileError
from gadms.train.checkpoint_checks import check_resume_settings
from gadms.train.loop import CHECKPOINT, FINAL_MODEL

REPO = Path(__file__).resolve().parents[2]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")

# --set overrides -> the keys the one-line error must name
IMPOSSIBLE = {
    "heads_project": (["model.interaction.cross_attention_heads=6"], ["model.interaction.cross_attention_heads"]),
    "heads_irra": (
        ["model.backbone=ViT-B-16", "model.image_height=384", "model.image_width=128", "model.interaction.variant=irra"]
        + ["model.interaction.cross_attention_heads=3"],
        ["model.interaction.cross_attention_heads", "model.backbone", "model.interaction.variant"],
    ),
    "image_height": (["model.image_height=130"], ["model.image_height", "model.image_width"]),
    "image_width_vit": (["model.backbone=ViT-B-16", "model.image_width=72"], ["model.image_width", "model.backbone"]),
    "context_length": ([f"model.context_length={CLIP_CONTEXT + 1}"], ["model.context_length"]),
    "batch_accumulation": (
        ["train.batch_size=10", "train.grad_accumulation=4"],
        ["train.batch_size", "train.grad_accumulation"],
    ),
    "batch_gpus": (["train.batch_size=32", "train.gpus=3"], ["train.batch_size", "train.gpus"]),
    "finetune_pairs": (["finetune.batch_size=7"], ["finetune.batch_size", "finetune.sampler"]),
    "workers_slots": (["train.num_workers=3"], ["train.num_workers", "train.stream.slots"]),
    "no_loss": (
        ["loss.sdm.enabled=false", "loss.mtp.enabled=false", "loss.itc.enabled=false"],
        ["loss.sdm.enabled", "loss.mtp.enabled"],
    ),
    "zero_weights": (
        ["loss.sdm.weight=0", "loss.mtp.weight=0", "loss.itc.enabled=false"],
        ["loss.sdm.enabled", "loss.mtp.enabled"],
    ),
    "alias_latest": (["tracking.champion_alias=latest"], ["tracking.champion_alias"]),
    "alias_latest_caps": (["tracking.champion_alias=LaTeSt"], ["tracking.champion_alias"]),
    "alias_version": (["tracking.champion_alias=v1"], ["tracking.champion_alias"]),
    "alias_version_caps": (["tracking.champion_alias=V12"], ["tracking.champion_alias"]),
    "alias_space": (["tracking.champion_alias=best model"], ["tracking.champion_alias"]),
    "alias_dot": (["tracking.champion_alias=prod.1"], ["tracking.champion_alias"]),
    "name_slash": (["tracking.registered_model=team/model"], ["tracking.registered_model"]),
    "name_colon": (["tracking.registered_model=a:b"], ["tracking.registered_model"]),
    "name_percent": (["tracking.registered_model=a%2Fb"], ["tracking.registered_model"]),
    "name_backslash": (["tracking.registered_model=a\\b"], ["tracking.registered_model"]),
    "name_dots": (["tracking.registered_model=.."], ["tracking.registered_model"]),
    "name_blank": (["tracking.registered_model='   '"], ["tracking.registered_model"]),
    "zone_unknown": (["orchestration.timezone=Mars/Olympus"], ["orchestration.timezone"]),
    "zone_folder": (["orchestration.timezone=America"], ["orchestration.timezone"]),
    "zone_case": (["orchestration.timezone=utc"], ["orchestration.timezone"]),
    "zone_path": (["orchestration.timezone=../../etc/passwd"], ["orchestration.timezone"]),
    "detector_device": (["curation.detector.device=gpu0"], ["curation.detector.device"]),
    "retry_delay": (["orchestration.retry_delays_s=[2, -5]"], ["orchestration.retry_delays_s"]),
}

# the same rules let through what is possible
POSSIBLE = [
    ["model.interaction.cross_attention_heads=16"],
    ["model.backbone=ViT-B-16", "model.image_height=384", "model.image_width=128"],
    [f"model.context_length={CLIP_CONTEXT}"],
    ["train.batch_size=12", "train.grad_accumulation=4"],
    ["train.num_workers=2"],
    ["train.num_workers=0", "train.stream.slots=3"],
    ["finetune.sampler=random", "finetune.batch_size=7"],
    ["loss.sdm.enabled=false", "loss.itc.enabled=false"],
    ["tracking.champion_alias=champion-v2", "tracking.registered_model=gadms person.retrieval v2"],
    ["tracking.champion_alias=v1beta"],
    ["orchestration.timezone=Europe/Berlin", "curation.detector.device=cuda:1"],
]


def _sets(overrides: list[str]) -> list[str]:
    return [word for text in overrides for word in ("--set", text)]


def _one_error_line(outcome) -> str:
    """The single ``error:`` line a refused command wrote (and nothing of a traceback)."""
    outcome.assert_contract()
    assert outcome.code == 2, outcome
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome
    return lines[0]


@pytest.fixture(scope="module")
def defaults(tmp_path_factory) -> Path:
    """A parameter file of the built-in defaults (the tiny backbone), so the repository's params.yaml is not read."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text("{}\n")
    return path


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_an_impossible_combination_is_one_line_naming_its_keys(run_gadms, defaults, case):
    overrides, keys = IMPOSSIBLE[case]
    line = _one_error_line(run_gadms("params", "show", "--params", str(defaults), *_sets(overrides)))
    for key in keys:
        assert key in line, (key, line)


@pytest.mark.parametrize("overrides", POSSIBLE, ids=lambda o: ",".join(o)[:60])
def test_possible_combinations_are_accepted(run_gadms, defaults, overrides):
    outcome = run_gadms("params", "show", "--params", str(defaults), *_sets(overrides))
    assert outcome.code == 0, outcome


@pytest.mark.parametrize("command", [["train", "pretrain", "--data", "d"], ["train", "finetune", "--benchmark", "x"]])
def test_training_refuses_impossible_params_before_its_run_directory_exists(run_gadms, defaults, tmp_path, command):
    out = tmp_path / "run"
    outcome = run_gadms(
        *command, "--out", str(out), "--no-track", "--params", str(defaults), "--set", "train.num_workers=3"
    )
    assert "train.num_workers, train.stream.slots" in _one_error_line(outcome)
    assert not out.exists()


def test_the_backbone_shapes_config_checks_against_are_the_models():
    from gadms.model.backbone import BACKBONES

    assert set(BACKBONE_SHAPES) == set(BACKBONES)
    for name, spec in BACKBONES.items():
        shape = {"text_width": spec.text_width, "embed_dim": spec.embed_dim, "patch_size": spec.patch_size}
        assert BACKBONE_SHAPES[name] == shape, name


@pytest.mark.parametrize("path", sorted(REPO.glob("params*.yaml")), ids=lambda p: p.name)
def test_every_shipped_parameter_file_passes_the_whole_checks(path):
    load_params(path)


def test_prefect_yaml_schedules_use_iana_time_zones():
    from gadms.config import valid_time_zone

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    zones = [s.get("timezone", "UTC") for d in spec["deployments"] for s in d.get("schedules") or []]
    assert zones and all(valid_time_zone(zone) == zone for zone in zones)


# -- MLflow is the reference for its own rules: what the config refuses, MLflow refuses, and the other way round


ALIASES = ["champion", "champion-2", "v1beta", "best_model", "latest", "LATEST", "v1", "V12", "a b", "prod.1", "x/y"]
# "a\\b" is left out: MLflow refuses it on Windows only (a path separator there); the config refuses it everywhere
NAMES = ["gadms-person-retrieval", "gadms person v2", "a.b", "team/model", "a:b", "a%b", "..", ".", "..x"]


def _config_accepts(key: str, value: str) -> bool:
    try:
        params_from_dict({"tracking": {key: value}})
    except ConfigError:
        return False
    return True


def _mlflow_accepts(check, value: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        check(value)
    except MlflowException:
        return False
    return True


@pytest.mark.parametrize("alias", ALIASES)
def test_the_alias_rules_are_mlflows(alias):
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    def mlflow_check(value: str) -> None:
        _validate_model_alias_name(value)
        _validate_model_alias_name_reserved(value)

    assert _config_accepts("champion_alias", alias) == _mlflow_accepts(mlflow_check, alias)


@pytest.mark.parametrize("name", NAMES)
def test_the_registered_model_name_rules_are_mlflows(name):
    from mlflow.store.model_registry.file_store import _validate_model_name

    assert _config_accepts("registered_model", name) == _mlflow_accepts(_validate_model_name, name)


# -- devices: one line at the start of the command that uses them


@NO_GPU
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_on_a_gpu_this_machine_lacks_is_one_line_before_any_work(run_gadms, tmp_path, device, command):
    out = tmp_path / "run"
    target = ["--data", str(tmp_path)] if command == "pretrain" else ["--benchmark", "cuhk-pedes"]
    outcome = run_gadms("train", command, *target, "--out", str(out), "--no-track", "--device", device)
    line = _one_error_line(outcome)
    assert line.startswith(f"error: --device {device}: no CUDA GPU"), line
    assert not out.exists()


@NO_GPU
def test_evaluate_on_a_missing_gpu_is_one_line(run_gadms, tmp_path):
    outcome = run_gadms(
        "evaluate", "--checkpoint", str(tmp_path), "--benchmark", "cuhk-pedes", "--device", "cuda", "--root", "x"
    )
    assert _one_error_line(outcome).startswith("error: --device cuda: no CUDA GPU")


@NO_GPU
@pytest.mark.parametrize("command", [["ablate"], ["ablate", "ceiling"]])
def test_an_ablation_on_a_missing_gpu_is_one_line_before_any_work(run_gadms, tmp_path, command):
    """``gadms ablate --device cuda`` used to pass the name on unchecked and fail deep in torch."""
    out = tmp_path / "ablation"
    outcome = run_gadms(*command, "--device", "cuda", "--set", f"ablate.out_dir={out}")
    assert _one_error_line(outcome).startswith("error: --device cuda: no CUDA GPU")
    assert not out.exists()


def test_a_name_that_is_no_device_is_refused(run_gadms, tmp_path):
    outcome = run_gadms("train", "finetune", "--benchmark", "x", "--out", str(tmp_path / "r"), "--device", "tpu:0")
    assert _one_error_line(outcome) == "error: --device 'tpu:0': not a device; use auto, cpu, cuda, cuda:N or mps"


def test_gpu_numbers_are_checked_against_the_gpus_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda", "--device") == "cuda" and check_device("cuda:1", "--device") == "cuda:1"
    with pytest.raises(DeviceError, match=r"^--device cuda:2: this machine has 2 CUDA GPU\(s\), numbered 0 to 1$"):
        check_device("cuda:2", "--device")


def test_mps_is_refused_where_torch_does_not_report_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="^curation.detector.device mps: Apple's MPS device is not available"):
        check_device("mps", "curation.detector.device")


@NO_GPU
def test_the_detector_and_search_devices_name_their_keys():
    from gadms.curation.detect import resolve_device as detector_device
    from gadms.devices import resolve_device as search_device

    with pytest.raises(DeviceError, match="^curation.detector.device cuda: no CUDA GPU"):
        detector_device("cuda")
    with pytest.raises(DeviceError, match="^--device cuda:1: no CUDA GPU"):
        search_device("cuda:1")
    assert detector_device("auto") in ("cpu", "mps") and search_device("auto") == "cpu"


# -- the data: a batch larger than it trains nothing, so it is refused before a model is written


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A small synthetic CUHK-PEDES (6 identities) and its number of train pairs."""
    from gadms.config import SynthConfig
    from gadms.synth.benchmark import write_benchmark

    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, 6, 0, SynthConfig(), progress=False)
    return root


def _train_pairs(bench: Path) -> int:
    records = json.loads((bench / "CUHK-PEDES" / "reid_raw.json").read_text())
    return sum(len(r["captions"]) for r in records if r["split"] == "train")


FAST = ["model.context_length=16", "train.num_workers=0", "train.amp=false"]


def _finetune(run_gadms, params: Path, bench: Path, out: Path, *overrides: str, resume: bool = False):
    args = ["train", "finetune", "--benchmark", "cuhk-pedes", "--root", str(bench), "--out", str(out), "--no-track"]
    args += ["--device", "cpu", "--params", str(params), *_sets([*FAST, *overrides])]
    return run_gadms(*args, *(["--resume"] if resume else []))


def test_finetune_batch_larger_than_the_data_is_refused_before_a_model_is_written(run_gadms, defaults, bench, tmp_path):
    pairs = _train_pairs(bench)
    batch = 2 * pairs + 2
    out = tmp_path / "run"
    line = _one_error_line(_finetune(run_gadms, defaults, bench, out, f"finetune.batch_size={batch}"))
    assert line == (
        f"error: finetune.batch_size {batch} is larger than the data: the cuhk-pedes train split holds {pairs} "
        f"caption-image pairs; set finetune.batch_size to at most {pairs}"
    )
    assert not (out / FINAL_MODEL).exists() and not (out / CHECKPOINT).exists()


def test_pretraining_refuses_a_batch_larger_than_the_data_only_where_no_step_would_run(run_gadms, defaults, bench):
    from gadms.train.recipes import pretrain_dataset

    pairs = _train_pairs(bench)
    too_big = f"train.batch_size={2 * pairs + 2}"
    outcome = run_gadms(
        "train", "pretrain", "--data", str(bench), "--format", "cuhk-pedes", "--out", str(bench.parent / "p"),
        "--no-track", "--device", "cpu", "--params", str(defaults),
        *_sets([*FAST, too_big, "train.grad_accumulation=2"]),
    )  # fmt: skip
    assert "train.batch_size" in _one_error_line(outcome) and f"holds {pairs} caption-image pairs" in outcome.stderr
    one_short_batch = load_params(defaults, [*FAST, too_big])  # without accumulation the short batch trains
    assert len(pretrain_dataset(one_short_batch, "cuhk-pedes", bench)) == pairs


# -- --resume refuses changed result-shaping settings


@pytest.fixture
def one_epoch(run_gadms, defaults, bench, tmp_path) -> Path:
    """A fine-tuning run directory holding the checkpoint of its first (of two) epochs."""
    out = tmp_path / "run"
    outcome = _finetune(run_gadms, defaults, bench, out, "finetune.epochs=1", "finetune.batch_size=8")
    assert outcome.code == 0, outcome
    (out / FINAL_MODEL).unlink()
    return out


@pytest.mark.slow
def test_resume_with_changed_batch_size_and_lr_is_refused_naming_them(run_gadms, defaults, bench, one_epoch):
    before = (one_epoch / CHECKPOINT).read_bytes()
    outcome = _finetune(
        run_gadms, defaults, bench, one_epoch, "finetune.batch_size=4", "finetune.lr=0.002", resume=True
    )
    assert _one_error_line(outcome) == (
        f"error: --resume: {one_epoch / CHECKPOINT} was written with finetune.batch_size=8, finetune.lr=0.0001; "
        "now 4, 0.002. Resume with the same settings, or start a fresh --out."
    )
    assert (one_epoch / CHECKPOINT).read_bytes() == before and not (one_epoch / FINAL_MODEL).exists()


LONGER = ["finetune.epochs=2", "finetune.batch_size=8"]  # the same settings, one more epoch


@pytest.mark.slow
def test_resume_with_the_same_settings_trains_on_and_may_train_longer(run_gadms, defaults, bench, one_epoch):
    outcome = _finetune(run_gadms, defaults, bench, one_epoch, *LONGER, resume=True)
    assert outcome.code == 0, outcome
    assert [line.split(":")[0] for line in outcome.stdout.splitlines() if line.startswith("epoch")] == ["epoch 2"]
    assert (one_epoch / FINAL_MODEL).is_file()


@pytest.mark.slow
def test_a_checkpoint_without_the_record_resumes_with_a_warning(run_gadms, defaults, bench, one_epoch, caplog):
    state = torch.load(one_epoch / CHECKPOINT, weights_only=False)
    del state["settings"]
    torch.save(state, one_epoch / CHECKPOINT)
    outcome = _finetune(run_gadms, defaults, bench, one_epoch, *LONGER, resume=True)
    assert outcome.code == 0, outcome
    assert any("records no settings" in r.getMessage() for r in caplog.records)


RECORDED = {"train.batch_size": 8, "train.optimizer.lr": 0.001, "model.masking.score": "gass", "data.pairs": 40}


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ({**RECORDED}, None),
        ({**RECORDED, "train.num_new_key": 1}, None),  # a key the checkpoint does not know is not compared
        (
            {**RECORDED, "train.batch_size": 16, "train.optimizer.lr": 0.002},
            "was written with train.batch_size=8, train.optimizer.lr=0.001; now 16, 0.002. ",
        ),
        ({**RECORDED, "data.pairs": 41}, "was written with data.pairs=40; now 41. "),
        ({**RECORDED, "model.masking.score": "random"}, "was written with model.masking.score=gass; now random. "),
        ({**RECORDED, "train.batch_size": 8.0}, "was written with train.batch_size=8; now 8.0. "),
    ],
)
def test_the_settings_check_names_what_changed(now, expected):
    path = Path("run/checkpoint.pt")
    if expected is None:
        check_resume_settings(dict(RECORDED), now, path)
        return
    with pytest.raises(ValueError) as info:
        check_resume_settings(dict(RECORDED), now, path)
    assert str(info.value).startswith(f"--resume: {path} {expected}"), str(info.value)


def test_many_changes_are_counted_and_a_damaged_record_is_one_line():
    recorded = {f"k{i}": i for i in range(7)}
    with pytest.raises(ValueError, match=re.escape("k3=3 (and 3 more); now -1, -2, -3, -4.")):
        check_resume_settings(recorded, {f"k{i}": -i - 1 if i else -1 for i in range(7)}, Path("c.pt"))
    with pytest.raises(ModelFileError, match="^c.pt: checkpoint entry 'settings' must be a dict, got a list$"):
        check_resume_settings([1], {"k": 1}, Path("c.pt"))
    check_resume_settings({"k": torch.ones(3)}, {"j": 1}, Path("c.pt"))  # an odd value of another key is ignored
