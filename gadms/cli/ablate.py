"""``gadms ablate``: the paper's Table 4 (masking rows x seeds) as one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import DeviceOpt, ParamsOpt, SetOpt
from gadms.devices import resolve_device


def ablate(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default ablate.out_dir)."),
    rows: Optional[str] = typer.Option(
        None,
        "--rows",
        metavar="ROW,ROW",
        help="Rows to run (default ablate.rows): none, random, cosine, gass, gass-official, gass-no-mtp, "
        "random-no-mtp, clean.",
    ),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, metavar="N", help="Run seeds 0..N-1 of every row."),
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="Pre-training corpus to use instead of the synthetic noisy one (ablate.corpus)."
    ),
    fmt: str = typer.Option("cuhk-pedes", "--format", help="--corpus format: curated | webperson | a benchmark."),
    benchmarks_root: Optional[Path] = typer.Option(
        None,
        "--benchmarks-root",
        help="Evaluate on the eval.benchmarks found here instead of the synthetic held-out identities.",
    ),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    device: str = DeviceOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The paper's Table 4 as one command: each masking row x each seed, GA-DMS pre-training, evaluation.

    Rows: none (no masking, no MTP), random / cosine (CSS) / gass (paper formulas) / gass-official (official
    code's formulas) scores for dual masking + MTP, gass-no-mtp and random-no-mtp (noise masking only), clean
    (none on the corpus without its wrong words: the upper bound).
    Every row starts from the same base weights: model.pretrained, or (when that is null) the base stage, the
    tiny model pre-trained on clean synthetic captions as a stand-in for public CLIP weights, built once and
    cached in ablate.base.cache_dir by a hash of its inputs. Rows train on the noisy synthetic corpus
    (ablate.corpus) and are evaluated on identities never trained on (ablate.held_out's test split).

    Writes OUT/results/<row>-seed<s>.json per finished cell (a rerun skips those; a killed cell resumes from its
    checkpoint), then OUT/results.{csv,md,txt} (mean +- std of R1, R5, R10, mAP, mINP per row) and
    OUT/ablation.png (bars with error bars). MLflow: one parent run `ablate <date>` with a child per (row, seed),
    the table and the chart. The testbed of docs/ablation.md is `gadms ablate --params params.ablate.yaml`.
    """
    if ctx.invoked_subcommand is not None:  # `gadms ablate ceiling`: the table is not run
        return

    from gadms.ablate.run import run_ablation
    from gadms.lifetime import guard

    guard("gadms ablate")  # no child process outlives the command
    with user_errors():
        extra: dict[str, object] = {"ablate.out_dir": out}
        if rows is not None:
            extra["ablate.rows"] = "[" + ",".join(r.strip() for r in rows.split(",") if r.strip()) + "]"
        if seeds is not None:
            extra["ablate.seeds"] = str(list(range(seeds)))
        p = cli_params(params, set_, extra)
        dev = resolve_device(device)
        summary, text, ablation = run_ablation(p, corpus, fmt, benchmarks_root, not no_track, dev, typer.echo)
        typer.echo("\n" + text + "\n")
        folder = ablation.plan.out
        typer.echo(f"results: {folder / 'results.md'}, {folder / 'results.csv'}; chart: {folder / 'ablation.png'}")
        if ablation.tracker is not None:
            typer.echo(f"MLflow parent run: {ablation.tracker.parent_id}")


def ceiling(
    device: str = DeviceOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The ceiling check: does the base model see every word the rows' masking should find?

    Builds (or reuses, cached by a hash of its inputs) the base stage and the held-out corpus
    (ablate.held_out.vocabulary: checkable), then prints, on held-out captions with fresh noise, occlusion's
    same-slot AUROC of finding the wrong words per slot and pooled, and per slot the share of one-colour swaps
    that lower the image-caption cosine, with a PASS/FAIL line (ablate.ceiling's targets). Exit status 0 on
    PASS, 1 on FAIL. Rows compare fairly only once it passes.
    """

    from gadms.ablate.ceiling import check_ceiling, format_ceiling
    from gadms.lifetime import guard

    guard("gadms ablate ceiling")
    with user_errors():
        p = cli_params(params, set_)
        dev = resolve_device(device)
        typer.echo("base stage and ceiling check (cached once built) ...")
        result = check_ceiling(p, dev, typer.echo)
    typer.echo(format_ceiling(result))
    if not result.passed:
        raise typer.Exit(1)


ablate_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
ablate_app.callback(invoke_without_command=True)(ablate)
ablate_app.command("ceiling")(ceiling)
