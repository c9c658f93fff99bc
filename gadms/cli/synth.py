"""``gadms synth web|benchmark``: the synthetic person world (the demo's and the tests' data)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gadms.cli.common import checked_seed, cli_params, user_errors
from gadms.cli.options import ParamsOpt, QuietOpt, SeedOpt, SetOpt

synth_app = typer.Typer(
    help="The synthetic person world: the built-in data for the demo and the tests.\n\n"
    "Clothed 2-D figures are drawn from attribute sets (gender, hair colour and style, top type/colour/pattern, "
    "bottom type/colour, shoe colour, bag, hat). One attribute set is one identity; its images vary pose, scale, "
    "background, lighting and small occlusions. For every figure the exact box and the 17 COCO keypoints with "
    "visibility (0 outside the image, 1 covered, 2 seen) are known. Same seed, same bytes.",
    no_args_is_help=True,
)


@synth_app.command("web")
def synth_web(
    out: Path = typer.Option(..., "--out", help="Output directory for 00000.tar, 00000.parquet, ..."),
    scenes: int = typer.Option(200, "--scenes", min=1, help="Number of scenes (images) to generate."),
    seed: Optional[int] = SeedOpt,
    shard_size: Optional[int] = typer.Option(
        None, "--shard-size", help="Samples per tar shard (default: synth.shard_size)."
    ),
    preview: Optional[Path] = typer.Option(
        None, "--preview", help="Also write a PNG of a few scenes with boxes and keypoints."
    ),
    quiet: bool = QuietOpt,
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

    with user_errors():
        p = cli_params(params, set_, {"synth.shard_size": shard_size})
        seed = p.seed if seed is None else checked_seed(seed)
        started = time.perf_counter()
        summary = write_web_shards(out, scenes, seed, p.synth, p.curation.filter, progress=not quiet)
        typer.echo(
            f"wrote {summary.scenes} scenes ({summary.people} people) in {summary.shards} shard(s) to "
            f"{summary.out} in {time.perf_counter() - started:.1f}s"
        )
        typer.echo("expected filter decisions: " + ", ".join(f"{k}={v}" for k, v in summary.decisions.items()))
        if preview is not None:
            typer.echo(f"preview: {web_preview(out, preview)}")


@synth_app.command("benchmark")
def synth_benchmark(
    out: Path = typer.Option(..., "--out", help="Output directory; the benchmark goes to OUT/CUHK-PEDES."),
    identities: int = typer.Option(100, "--identities", min=3, help="Number of identities (split train/val/test)."),
    seed: Optional[int] = SeedOpt,
    caption_noise: Optional[float] = typer.Option(
        None,
        "--caption-noise",
        metavar="P",
        help="Fraction of train captions in which one attribute word is replaced by a wrong one "
        "(simulated MLLM hallucination); the wrong words' character spans go to synthetic_truth.json.",
    ),
    preview: Optional[Path] = typer.Option(
        None, "--preview", help="Also write a PNG of a few images with their captions."
    ),
    quiet: bool = QuietOpt,
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

    with user_errors():
        p = cli_params(params, set_, {"synth.caption_noise": caption_noise})
        seed = p.seed if seed is None else checked_seed(seed)
        started = time.perf_counter()
        s = write_benchmark(out, identities, seed, p.synth, progress=not quiet)
        typer.echo(f"wrote {s.root} in {time.perf_counter() - started:.1f}s")
        typer.echo(f"{'split':<6} {'identities':>10} {'images':>7} {'captions':>8}")
        for split in ("train", "val", "test"):
            typer.echo(f"{split:<6} {s.identities[split]:>10} {s.images[split]:>7} {s.captions[split]:>8}")
        typer.echo(f"noisy captions: {s.noisy_captions}")
        if preview is not None:
            typer.echo(f"preview: {benchmark_preview(s.root, preview)}")
