"""Broken or hostile model files: each ends in one line naming the file and what is wrong, never a traceback,
and a pickle that would run code is refused without running it."""

import json
import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import ModelConfig, SynthConfig
from gadms.model.backbone import BackboneError, build_clip, load_pretrained
from gadms.model.files import ModelFileError
from gadms.model.retrieval import Architecture, PersonRetrievalModel, load_model, save_model
from gadms.synth.benchmark import write_benchmark
from gadms.train.recipes import load_any_model

ARCH = Architecture.from_config(ModelConfig())


class _WouldRunCode:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def model() -> PersonRetrievalModel:
    torch.manual_seed(0)
    return PersonRetrievalModel(ARCH)


def _checkpoint(model, **changes) -> dict:
    state = {"epoch": 0, "model": model.state_dict(), "architecture": json.dumps(asdict(model.arch), sort_keys=True)}
    return {k: v for k, v in {**state, **changes}.items() if v is not None}


def _files(tmp_path: Path, model) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex the one-line error must match)."""
    good = save_model(model, tmp_path / "good.safetensors").read_bytes()
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, content: bytes | None, match: str, save=None) -> None:
        path = tmp_path / name
        if save is not None:
            save(path)
        else:
            path.write_bytes(content)
        out[name] = (path, f"^{path}: {match}")

    put("empty.safetensors", b"", r"model file is empty \(0 bytes\)")
    put("cut.safetensors", good[: len(good) // 2], "not a readable safetensors file, truncated or corrupt")
    put(
        "nometa.safetensors",
        None,
        r"not a gadms model file \(no architecture metadata\)",
        lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p)),
    )

    def meta(text: str):
        return lambda p: save_file({"x": torch.zeros(1)}, str(p), metadata={"gadms_architecture": text})

    put("wings.safetensors", None, r"unknown architecture field\(s\) 'wings'", meta('{"backbone": "tiny", "wings": 2}'))
    put(
        "huge.safetensors",
        None,
        r"architecture field 'image_height' must be a count up to 8192, got '1000000000'",
        meta('{"image_height": 1000000000}'),
    )
    put("notjson.safetensors", None, "architecture metadata is not a JSON object", meta("{oops"))
    put("mismatch.safetensors", None, r"weights do not fit its architecture \(\d+ missing", meta("{}"))
    torch.save(_checkpoint(model), tmp_path / "ok.pt")
    whole = (tmp_path / "ok.pt").read_bytes()
    put("checkpoint_cut.pt", whole[: len(whole) // 2], "not a readable PyTorch file, truncated or corrupt")
    put(
        "noarch.pt",
        None,
        "not a gadms training checkpoint: missing 'architecture'",
        lambda p: torch.save(_checkpoint(model, architecture=None), p),
    )
    put(
        "plain.pt",
        None,
        "not a gadms training checkpoint: missing 'architecture', 'model'",
        lambda p: torch.save(model.state_dict(), p),
    )
    put(
        "unknown_backbone.pt",
        None,
        r"unknown backbone 'huge' \(known: ViT-B-16, tiny\)",
        lambda p: torch.save(_checkpoint(model, architecture='{"backbone": "huge"}'), p),
    )
    put("list.pt", None, "not a gadms training checkpoint: it holds a list", lambda p: torch.save([1, 2], p))
    marker = tmp_path / "code_ran"
    put(
        "evil.pt",
        None,
        r"refused: loading it would run code \(it calls (builtins|io)\.open\)",
        lambda p: torch.save({"model": _WouldRunCode(marker)}, p),
    )
    put(
        "evil_plain.pt",
        None,
        r"refused: loading it would run code \(it calls (builtins|io)\.open\)",
        lambda p: p.write_bytes(pickle.dumps({"model": _WouldRunCode(marker)}, protocol=4)),
    )
    return out


def test_each_broken_model_file_is_one_line_naming_it(tmp_path, model):
    for name, (path, match) in _files(tmp_path, model).items():
        with pytest.raises(ModelFileError) as info:
            load_any_model(path)
        message = str(info.value)
        assert "\n" not in message and len(message) < 300, (name, message)
        assert re.search(match, message), (name, message)
    assert not (tmp_path / "code_ran").exists()
    assert load_any_model(tmp_path / "ok.pt").arch == ARCH
    assert load_model(tmp_path / "good.safetensors").arch == ARCH


def test_evaluate_reports_broken_model_files_in_one_line(tmp_path, model):
    files = _files(tmp_path, model)
    for name in ("cut.safetensors", "evil.pt", "checkpoint_cut.pt", "noarch.pt", "unknown_backbone.pt"):
        path, _ = files[name]
        result = CliRunner().invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(path),
                "--benchmark",
                "cuhk-pedes",
                "--root",
                str(tmp_path),
                "--device",
                "cpu",
            ],
        )
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (name, result.output)
        assert lines[0].startswith(f"error: {path}: "), (name, lines[0])
    assert not (tmp_path / "code_ran").exists()


def test_broken_pretrained_weights_are_one_line(tmp_path, model):
    files = _files(tmp_path, model)
    for name in ("cut.safetensors", "empty.safetensors", "checkpoint_cut.pt", "evil_plain.pt"):
        path, _ = files[name]
        with pytest.raises(BackboneError, match=rf"^{path}: "):
            load_pretrained(build_clip("tiny"), str(path), arch="tiny")
    assert not (tmp_path / "code_ran").exists()


def test_resume_from_a_truncated_checkpoint_is_one_line_and_keeps_the_file(tmp_path):
    write_benchmark(tmp_path / "bench", 3, 0, SynthConfig(), progress=False)
    out = tmp_path / "run"
    out.mkdir()
    checkpoint = out / "checkpoint.pt"
    torch.manual_seed(0)
    torch.save(_checkpoint(PersonRetrievalModel(ARCH)), checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    before = checkpoint.read_bytes()

    result = CliRunner().invoke(
        app,
        [
            "train",
            "pretrain",
            "--data",
            str(tmp_path / "bench"),
            "--format",
            "cuhk-pedes",
            "--out",
            str(out),
            "--resume",
            "--no-track",
            "--device",
            "cpu",
            "--set",
            "train.num_workers=0",
        ],
    )

    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert lines[-1].startswith(f"error: {checkpoint}: not a readable PyTorch file, truncated or corrupt"), lines
    assert checkpoint.read_bytes() == before
    assert sorted(os.listdir(out)) == [".lock", "checkpoint.pt"]  # nothing written but the writer's lock file
