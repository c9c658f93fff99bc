"""The ``gadms`` command line.

Every command reads params.yaml (``--params`` picks another file) and accepts
``--set section.key=value`` overrides. User errors print one line starting
with ``error:`` and exit with status 2.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
import yaml

from gadms.config import ConfigError, Params, load_params

app = typer.Typer(
    help="GA-DMS text-based person retrieval: curate web images into a person-caption corpus, "
    "gate its quality, version it, train and evaluate CLIP with GA-DMS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(
    help="The synthetic person world: the built-in data for the demo and the tests.\n\n"
    "Clothed 2-D figures are drawn from attribute sets (gender, hair colour and style, top type/colour/pattern, "
    "bottom type/colour, shoe colour, bag, hat). One attribute set is one identity; its images vary pose, scale, "
    "background, lighting and small occlusions. For every figure the exact box and the 17 COCO keypoints with "
    "visibility (0 outside the image, 1 covered, 2 seen) are known. Same seed, same bytes.",
    no_args_is_help=True,
)
params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(params_app, name="params")

ParamsOpt = typer.Option(None, "--params", help="Parameter file (default: ./params.yaml, else built-in defaults).")
SetOpt = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override one parameter, e.g. --set train.lr=3e-4 (repeatable).")


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Report expected failures as ``error: ...`` on one line, exit status 2."""
    try:
        yield
    except (ConfigError, UserError, ValueError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None


def _params(path: Optional[Path], overrides: Optional[list[str]], extra: dict[str, object] | None = None) -> Params:
    """Load parameters; ``extra`` maps keys to command-line values (None = not given)."""
    sets = list(overrides or [])
    for key, value in (extra or {}).items():
        if value is not None:
            sets.append(f"{key}={value}")
    return load_params(path, sets)


@params_app.command("show")
def params_show(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the validated parameters (file + overrides + defaults) as YAML."""
    with _user_errors():
        p = _params(params, set_)
        typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False), nl=False)


@synth_app.command("web")
def synth_web(
    out: Path = typer.Option(..., "--out", help="Output directory for 00000.tar, 00000.parquet, ..."),
    scenes: int = typer.Option(200, "--scenes", min=1, help="Number of scenes (images) to generate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: params seed)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Samples per tar shard (default: synth.shard_size)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a PNG of a few scenes with boxes and keypoints."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Web-like scenes as WebDataset tar shards in img2dataset's layout.

    Each scene (synth.image_width x synth.image_height) holds 0..synth.max_people people: most pass the
    SPEC section-2 filters, the others are built to fail one (too_small, aspect, low_conf, few_keypoints,
    no_hip, no_head). Each sample is KEY.jpg, KEY.txt (web alt-text) and KEY.json (img2dataset fields plus
    the ground truth under "synthetic": per person the box [x0, y0, x1, y1] (x1, y1 exclusive), the
    detector score, 17 keypoints [x, y, v], the attributes, the design and the decision the SPEC rules give).
    """
    from gadms.synth.preview import web_preview
    from gadms.synth.web import write_web_shards

    with _user_errors():
        p = _params(params, set_, {"synth.shard_size": shard_size})
        seed = p.seed if seed is None else seed
        if seed < 0:
            raise UserError(f"--seed {seed}: must be >= 0")
        started = time.perf_counter()
        summary = write_web_shards(out, scenes, seed, p.synth, p.curation.filter, progress=not quiet)
        typer.echo(f"wrote {summary.scenes} scenes ({summary.people} people) in {summary.shards} shard(s) to {summary.out} in {time.perf_counter() - started:.1f}s")
        typer.echo("expected filter decisions: " + ", ".join(f"{k}={v}" for k, v in summary.decisions.items()))
        if preview is not None:
            typer.echo(f"preview: {web_preview(out, preview)}")


@synth_app.command("benchmark")
def synth_benchmark(
    out: Path = typer.Option(..., "--out", help="Output directory; the benchmark goes to OUT/CUHK-PEDES."),
    identities: int = typer.Option(100, "--identities", min=3, help="Number of identities (split train/val/test)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: params seed)."),
    caption_noise: Optional[float] = typer.Option(
        None, "--caption-noise", metavar="P",
        help="Fraction of train captions in which one attribute word is replaced by a wrong one "
        "(simulated MLLM hallucination); the wrong words' character spans go to synthetic_truth.json.",
    ),  # fmt: skip
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a PNG of a few images with their captions."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """A text-to-person retrieval benchmark in the real CUHK-PEDES format.

    Writes OUT/CUHK-PEDES/reid_raw.json (records: id, file_path, captions, split, processed_tokens) and
    OUT/CUHK-PEDES/imgs/. Identities are disjoint across train/val/test (synth.split_fractions), each with
    synth.min..max_images_per_identity images and synth.captions_per_image captions per image.
    OUT/CUHK-PEDES/synthetic_truth.json holds attributes, poses, keypoints and noise spans.
    """
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.preview import benchmark_preview

    with _user_errors():
        p = _params(params, set_, {"synth.caption_noise": caption_noise})
        seed = p.seed if seed is None else seed
        if seed < 0:
            raise UserError(f"--seed {seed}: must be >= 0")
        started = time.perf_counter()
        s = write_benchmark(out, identities, seed, p.synth, progress=not quiet)
        typer.echo(f"wrote {s.root} in {time.perf_counter() - started:.1f}s")
        typer.echo(f"{'split':<6} {'identities':>10} {'images':>7} {'captions':>8}")
        for split in ("train", "val", "test"):
            typer.echo(f"{split:<6} {s.identities[split]:>10} {s.images[split]:>7} {s.captions[split]:>8}")
        typer.echo(f"noisy captions: {s.noisy_captions}")
        if preview is not None:
            typer.echo(f"preview: {benchmark_preview(s.root, preview)}")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Where the demo writes its outputs."),
    scenes: int = typer.Option(200, "--scenes", min=1, help="Web scenes to generate."),
    identities: int = typer.Option(100, "--identities", min=3, help="Benchmark identities to generate."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Run the main job on the built-in synthetic world and print where its outputs are.

    Today this builds the synthetic web shards and benchmark with previews; as the curation, quality-gate,
    training and orchestration stages land, it runs the whole pipeline.
    """
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.preview import benchmark_preview, web_preview
    from gadms.synth.web import write_web_shards

    with _user_errors():
        p = _params(params, set_)
        started = time.perf_counter()
        web = write_web_shards(out / "web", scenes, p.seed, p.synth, p.curation.filter)
        bench = write_benchmark(out / "benchmark", identities, p.seed, p.synth)
        web_png = web_preview(out / "web", out / "web_preview.png")
        bench_png = benchmark_preview(bench.root, out / "benchmark_preview.png")
        typer.echo(f"\ndemo finished in {time.perf_counter() - started:.1f}s; outputs:")
        typer.echo(f"  web shards      {web.out}  ({web.scenes} scenes, {web.people} people, {web.shards} shards)")
        typer.echo("                  expected filter decisions: " + ", ".join(f"{k}={v}" for k, v in web.decisions.items()))
        typer.echo(f"  benchmark       {bench.root}  ({sum(bench.identities.values())} identities, {sum(bench.images.values())} images)")
        typer.echo(f"  previews        {web_png}, {bench_png}")


def main() -> None:
    """Entry point of the ``gadms`` console script."""
    app(prog_name="gadms")


if __name__ == "__main__":
    sys.exit(main())
