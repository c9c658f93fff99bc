"""Stage cache keys: typed stage results and parameters hash by value, so a rerun with the same inputs hits the
cache and any changed field, or a task whose result type changed, misses it."""

from pathlib import Path
from types import SimpleNamespace

from flows.common import cache_on_inputs, rerun_if_missing
from gadms.config import params_from_dict
from gadms.results import Promotion, TrainedModel


def _context(name: str, returns: str) -> SimpleNamespace:
    def fn() -> None: ...

    fn.__annotations__["return"] = returns
    return SimpleNamespace(task=SimpleNamespace(name=name, fn=fn))


def _key(ignore=(), name="register-and-promote", returns="Promotion", **inputs) -> str | None:
    return cache_on_inputs(ignore)(_context(name, returns), inputs)


def test_stage_results_and_params_key_the_cache_by_value():
    params = params_from_dict({"seed": 3})
    tuned = TrainedModel("run-1", Path("work/runs/ft/model.safetensors"), "models:/m-1", {"cuhk-pedes/R1": 40.0})
    key = _key(params=params, tuned=tuned, benchmark="cuhk-pedes")
    same = TrainedModel("run-1", Path("work/runs/ft/model.safetensors"), "models:/m-1", {"cuhk-pedes/R1": 40.0})
    assert key == _key(params=params_from_dict({"seed": 3}), tuned=same, benchmark="cuhk-pedes")
    assert key is not None and len(key) == 64
    other_run = TrainedModel("run-2", same.path, same.model_uri, same.metrics)
    assert key != _key(params=params, tuned=other_run, benchmark="cuhk-pedes")
    assert key != _key(params=params_from_dict({"seed": 4}), tuned=tuned, benchmark="cuhk-pedes")
    assert key != _key(params=params, tuned=tuned, benchmark="cuhk-pedes", returns="dict[str, Any]")
    assert _key(("parent_run_id",), params=params, parent_run_id="a") == _key(
        ("parent_run_id",), params=params, parent_run_id="b"
    )
    promoted = Promotion("m", 1, True, "no champion yet")
    assert _key(result=promoted) != _key(result=Promotion("m", 1, False, "no champion yet"))


def test_a_task_whose_output_is_gone_runs_again(tmp_path):
    calls = []
    task = SimpleNamespace(with_options=lambda **options: calls.append(options))
    rerun_if_missing(task, tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    rerun_if_missing(task, tmp_path / "model.safetensors")
    assert calls == [{"refresh_cache": True}, {"refresh_cache": False}]
