"""Hostile or careless parameter input: alias bombs, huge files, deep nesting, duplicate keys, non-finite
numbers, seeds past 64 bits. Each is refused in one short line, quickly; legitimate YAML still loads."""

import io
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import MAX_PARAMS_BYTES, MAX_SEED, AugmentConfig, ConfigError, Params, flatten, load_params
from gadms.data.pipeline import EpochSampler, IdentitySampler, Pair, PairDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.safe_yaml import MAX_DEPTH, YamlLimitError, load_bounded

REPO = Path(__file__).resolve().parents[1]

# 9 ** 7 (4.8 million) strings from ~500 bytes: the "billion laughs" shape
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, "a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d", "e", "f", "g"], strict=True)
)


def _refused(tmp_path: Path, text: str, match: str, overrides=()) -> str:
    """Load ``text`` as a params file; assert a short one-line ConfigError matching ``match``, quickly."""
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as info:
        load_params(path, overrides)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "\n" not in message and len(message) < 240, message
    return message


def test_alias_bomb_is_refused_fast_with_a_short_message(tmp_path):
    assert len(BOMB) < 600
    _refused(tmp_path, BOMB, r"p\.yaml: more than \d+ values once aliases are expanded \(an alias bomb\?\)")


def test_alias_bomb_in_a_scalar_field_is_refused(tmp_path):
    _refused(tmp_path, BOMB.replace("g: &g", "seed: &g"), "alias bomb")


def test_alias_bomb_in_a_set_value_is_refused():
    doubling = "{" + ", ".join(f"k{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 40)) + "}"
    with pytest.raises(ConfigError, match=r"--set paths: more than \d+ values once aliases are expanded"):
        load_params(None, ["paths={k0: &a0 x, " + doubling[1:]])


def test_recursive_alias_is_refused(tmp_path):
    _refused(tmp_path, "pipeline: &a {synthesize: *a}\n", "alias bomb")


def test_anchors_within_budget_still_work(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: &s 7\ntrain: &t {epochs: *s}\nfinetune:\n  <<: {epochs: 3, lr: 0.001}\n  epochs: 4\n")
    p = load_params(path)
    assert (p.seed, p.train.epochs, p.finetune.epochs, p.finetune.lr) == (7, 7, 4, 0.001)


def test_oversized_params_file_is_refused_unread(tmp_path):
    message = _refused(tmp_path, "seed: 1\n#" + "x" * MAX_PARAMS_BYTES + "\n", r"larger than \d+ bytes")
    assert "xxxx" not in message


def test_offending_values_are_truncated_in_messages(tmp_path):
    message = _refused(tmp_path, "seed: " + "9x" * 50_000 + "\n", r"seed: input should be a valid integer")
    assert message.endswith("...)")
    with pytest.raises(ConfigError) as info:
        load_params(None, ["train.epochs=" + "[" * 3 + "1" * 10_000])
    assert len(str(info.value)) < 240


@pytest.mark.parametrize("where", ["file", "set"])
def test_deep_nesting_is_one_line(tmp_path, where):
    deep = "[" * 5000 + "]" * 5000
    if where == "file":
        _refused(tmp_path, f"train:\n  epochs: {deep}\n", r"p\.yaml: line 2: nested more than 64 levels")
    else:
        with pytest.raises(ConfigError, match=r"--set train\.epochs: line 1: nested more than 64 levels"):
            load_params(None, [f"train.epochs={deep}"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("seed: 1\nseed: 2\n", r"line 2: duplicate key 'seed'"),
        ("train:\n  epochs: 1\n  batch_size: 4\n  epochs: 2\n", r"line 4: duplicate key 'epochs'"),
        ("--set", r"--set train: line 1: duplicate key 'epochs'"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, match):
    if text == "--set":
        with pytest.raises(ConfigError, match=match):
            load_params(None, ["train={epochs: 1, epochs: 2}"])
    else:
        _refused(tmp_path, text, match)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "1e400", "-1e999"])
@pytest.mark.parametrize(
    "key",
    [
        "train.optimizer.lr",
        "train.optimizer.eps",
        "train.optimizer.weight_decay",
        "train.grad_clip",
        "finetune.lr",
        "loss.temperature",
        "loss.sdm.weight",
        "loss.mtp.weight",
        "model.masking.slope",
        "model.masking.alpha_noise",
        "curation.captioning.timeout_s",
        "curation.filter.min_short_side",
    ],
)
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', chr(92) + '.')}: input should be a finite number"):
        load_params(None, [f"{key}={value}"])


@pytest.mark.parametrize("key", ["train.optimizer.betas=[0.9, .inf]", "orchestration.retry_delays_s=[1, .nan]"])
def test_non_finite_numbers_in_lists_are_refused(key):
    with pytest.raises(ConfigError, match=r"\.1: input should be a finite number"):
        load_params(None, [key])


def test_every_float_parameter_refuses_infinity():
    """Not only the keys above: each float in the schema (single values and lists) refuses .inf."""

    def is_float(v) -> bool:
        return isinstance(v, float) or (isinstance(v, list) and bool(v) and isinstance(v[0], float))

    floats = {k: v for k, v in flatten(Params()).items() if is_float(v)}
    assert len(floats) > 40
    for key, value in floats.items():
        bad = "[.inf]" if isinstance(value, list) else ".inf"
        with pytest.raises(ConfigError, match="finite number"):
            load_params(None, [f"{key}={bad}"])


def test_seed_past_64_bits_is_one_line_and_the_largest_seed_trains():
    with pytest.raises(ConfigError, match=rf"seed: must be <= {MAX_SEED} \(got {MAX_SEED + 1}\)"):
        load_params(None, [f"seed={MAX_SEED + 1}"])
    assert load_params(None, [f"seed={MAX_SEED}"]).seed == MAX_SEED
    # every seed the schema accepts reaches torch without an overflow
    buf = io.BytesIO()
    Image.new("RGB", (8, 16)).save(buf, format="PNG")
    transform = image_transform(32, 16, AugmentConfig())
    dataset = PairDataset([Pair(buf.getvalue(), "a man", 0)], transform, tokenizer(8), MAX_SEED)
    dataset.set_epoch(2)
    assert dataset[0][0].shape == (3, 32, 16)
    for sampler in (EpochSampler(4, seed=MAX_SEED, shuffle=True), IdentitySampler([0, 0, 1, 1], 2, 2, seed=MAX_SEED)):
        sampler.set_epoch(3)
        assert sorted(set(sampler)) <= [0, 1, 2, 3]
    from gadms.config import LossConfig, ModelConfig
    from gadms.model.step import TrainingStep

    step = TrainingStep(ModelConfig(), LossConfig(), seed=MAX_SEED + 3)  # seed + rank
    assert step.generator.initial_seed() == 2


def test_derived_seeds_of_small_seeds_are_unchanged():
    """Wrapping at 2**64 leaves the orders of existing runs as they were."""
    sampler = EpochSampler(10, seed=5)
    sampler.set_epoch(1)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(5 * 7919 + 1)).tolist()
    assert list(sampler) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--params", "BOMB"], "alias bomb"),
        (["--params", "DEEP"], "nested more than 64 levels"),
        (["--set", f"seed={2**70}"], "seed: must be <="),
        (["--set", "train.optimizer.lr=inf"], "finite number"),
    ],
)
def test_cli_prints_one_line_exit_2(tmp_path, args, match):
    (tmp_path / "BOMB").write_text(BOMB)
    (tmp_path / "DEEP").write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    args = [str(tmp_path / a) if a in ("BOMB", "DEEP") else a for a in args]
    result = CliRunner().invoke(app, ["params", "show", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output


def _alias_chain(links: int, nest: str = "list") -> str:
    """Each anchor wraps the previous one 60 levels deep: every line is under the nesting limit, the expansion is
    ``60 * links`` levels deep (a few kB of text)."""
    lines = ["x0: &a0 0"]
    for i in range(1, links + 1):
        inner = "[" * 60 + f"*a{i - 1}" + "]" * 60 if nest == "list" else "{k: " * 60 + f"*a{i - 1}" + "}" * 60
        lines.append(f"x{i}: &a{i} {inner}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("nest", ["list", "mapping"])
def test_alias_chain_nested_deeper_than_the_limit_once_expanded_is_refused(tmp_path, nest):
    text = _alias_chain(100, nest).replace("x100:", "seed:")  # the deepest value in a field that quotes its input
    assert len(text) < 40_000
    _refused(tmp_path, text, r"p\.yaml: nested more than 64 levels deep once aliases are expanded")


def test_alias_chain_in_a_set_value_is_refused():
    value = "[" + ", ".join(line.split(": ", 1)[1] for line in _alias_chain(100).splitlines()) + "]"
    with pytest.raises(ConfigError, match=r"^--set seed: nested more than 64 levels deep once aliases are expanded"):
        load_params(None, [f"seed={value}"])


def test_expanded_depth_limit_is_exact():
    """Each anchor wraps the previous one in one list: the last value lies 1 + links + 1 levels deep."""

    def chain(links: int) -> str:
        return "a0: &a0 0\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, links + 1))

    deepest = load_bounded(chain(MAX_DEPTH - 2))[f"a{MAX_DEPTH - 2}"]  # 64 levels: allowed
    for _ in range(MAX_DEPTH - 2):
        deepest = deepest[0]
    assert deepest == 0
    with pytest.raises(YamlLimitError, match=rf"^nested more than {MAX_DEPTH} levels deep once aliases are expanded"):
        load_bounded(chain(MAX_DEPTH - 1))


def test_cli_alias_chain_is_one_line_exit_2(tmp_path):
    (tmp_path / "chain.yaml").write_text(_alias_chain(100).replace("x100:", "seed:"))
    result = CliRunner().invoke(app, ["params", "show", "--params", str(tmp_path / "chain.yaml")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "nested more than 64 levels deep once aliases are expanded" in lines[0], lines


def test_cli_recursion_error_is_a_last_resort_one_line_error(monkeypatch):
    def too_deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded while getting the repr of an object")

    monkeypatch.setattr("gadms.cli.common.load_params", too_deep)
    result = CliRunner().invoke(app, ["params", "show"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: input nested too deeply to process (maximum recursion depth exceeded)"
    ]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (f"ablate.seeds=[{MAX_SEED + 1}]", rf"ablate\.seeds\.0: must be <= {MAX_SEED} \(got {MAX_SEED + 1}\)"),
        ("ablate.seeds=[3, -1]", r"ablate\.seeds\.1: must be >= 0 \(got -1\)"),
        ("ablate.seeds=[true]", r"ablate\.seeds\.0: input should be a valid integer \(got True\)"),
        ("seed=true", r"seed: input should be a valid integer \(got True\)"),
        ("seed=1.0", r"seed: input should be a valid integer \(got 1\.0\)"),
        ("seed='7'", r"seed: input should be a valid integer \(got '7'\)"),
        ("ablate.corpus.seed=false", r"ablate\.corpus\.seed: input should be a valid integer \(got False\)"),
        (f"ablate.held_out.seed={MAX_SEED + 1}", r"ablate\.held_out\.seed: must be <="),
        ("ablate.base.corpus.seed=-5", r"ablate\.base\.corpus\.seed: must be >= 0"),
    ],
)
def test_every_seed_is_a_strict_integer_within_64_bits(override, match):
    with pytest.raises(ConfigError, match=match):
        load_params(None, [override])


def test_the_largest_seeds_are_still_accepted():
    p = load_params(None, [f"ablate.seeds=[0, {MAX_SEED}]", f"ablate.corpus.seed={MAX_SEED}", f"seed={MAX_SEED}"])
    assert (p.ablate.seeds, p.ablate.corpus.seed, p.seed) == ((0, MAX_SEED), MAX_SEED, MAX_SEED)


@pytest.mark.parametrize("command", ["web", "benchmark"])
@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70])
def test_synth_seed_outside_64_bits_is_one_line_and_writes_nothing(tmp_path, command, seed):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["synth", command, "--out", str(out), "--seed", str(seed), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: --seed {seed}: must be between 0 and {MAX_SEED} (2**64 - 1)"]
    assert not out.exists()
