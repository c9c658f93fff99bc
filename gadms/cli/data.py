"""``gadms data stats|index|version|push|pull|checkout`` and ``gadms validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gadms.cli.common import UserError, cli_params, user_errors
from gadms.cli.options import ParamsOpt, SetOpt
from gadms.config import Params

data_app = typer.Typer(
    help="Datasets: statistics of the benchmark and corpus formats, and versioning of the curated corpus with DVC "
    "(data.dvc at the repository root tracks paths.data_dir; the default remote is the local directory "
    "versioning.remote_url, any DVC remote URL works).",
    no_args_is_help=True,
)

# The options the data subcommands (and gadms validate) share.
CuratedOpt = typer.Option(None, "--data", help="The curated corpus (default: paths.data_dir).")
CorpusDirOpt = typer.Option(None, "--data", help="The corpus directory (default: paths.data_dir).")
RemoteOpt = typer.Option(
    None,
    "--remote",
    metavar="URL",
    help="Fetch from this DVC remote instead of the configured one: a folder (e.g. another machine's remote, "
    "mounted or copied) or any URL DVC understands (s3://, gs://, ssh://, ...). No tracked file changes (.dvc/config, "
    "data.dvc): the remote is added to the git-ignored .dvc/config.local for this command only.",
)


@data_app.command("stats")
def data_stats(
    benchmark: str = typer.Argument(..., help="cuhk-pedes | icfg-pedes | rstpreid | webperson | curated."),
    root: Optional[Path] = typer.Option(
        None,
        "--root",
        help="The dataset directory or a benchmark's parent (default: paths.data_dir for curated, "
        "paths.benchmarks_dir for a benchmark; webperson needs --root).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Identities, images and captions per split (skipped records are counted and reported)."""
    import json

    from gadms.data.stats import dataset_stats, format_stats

    with user_errors():
        p = cli_params(params, set_)
        if root is None and benchmark == "webperson":
            raise UserError("data stats webperson: --root is required (the folder of WebPerson Parquet files)")
        default = p.paths.data_dir if benchmark == "curated" else p.paths.benchmarks_dir
        stats = dataset_stats(benchmark, root or default)
        typer.echo(json.dumps(stats, indent=2, sort_keys=True) if as_json else format_stats(stats))


@data_app.command("index")
def data_index(
    path: str = typer.Argument(
        ..., help="The corpus: a folder or URL (s3://bucket/prefix) of curated *.tar shards or WebPerson *.parquet."
    ),
    kind: Optional[str] = typer.Option(
        None, "--format", help="curated | webperson (default: curated when PATH holds *.tar shards)."
    ),
) -> None:
    """Write PATH/_shards.parquet, the corpus index that training reads at start-up instead of every shard's metadata.

    The index lists each shard with its size and pair count (WebPerson: rows per row group too), computed here
    from the shards' metadata (curated: meta/NAME.parquet, WebPerson: Parquet footers). Training reads it in
    one request and checks it against one listing of PATH; after shards are added, removed or rewritten the
    index is stale (training warns and reads the footers) until this command is run again. `gadms curate run`
    writes the index itself; this command is for WebPerson corpora and curated corpora made before it did.
    """
    from gadms.data.corpus_index import INDEX_NAME, build_corpus_index

    with user_errors():
        entries = build_corpus_index(path, kind)
        pairs = sum(e.pairs for e in entries)
        typer.echo(f"wrote {path.rstrip('/')}/{INDEX_NAME}: {len(entries)} {entries[0].kind} shards, {pairs} pairs")


def validate(
    data: Optional[Path] = CuratedOpt,
    report: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Where report.html (kept per corpus under history/), summary.txt, gate.json and the GX Data Docs go "
        "(default: paths.reports_dir/gate).",
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The caption quality gate (SPEC 4): a Great Expectations suite over the curated captions and crops.

    Checks: non_empty, valid_text, word_count, no_speculation, no_background, mentions_person,
    mentions_attribute, no_placeholder, crop_size, crop_aspect (each passes when at least validation.mostly.<check>
    of the rows pass) and duplicates (at most validation.max_duplicate_rate). Exit status 0 when the gate passes,
    1 when it fails; nothing may be versioned or trained from data that failed.
    """
    from gadms.validation.gate import run_quality_gate

    with user_errors():
        p = cli_params(params, set_)
        target = data or p.paths.data_dir
        report_dir = report or p.paths.reports_dir / "gate"
        result = run_quality_gate(target, p.validation, report_dir)
        typer.echo(result.summary)
    if not result.passed:
        raise typer.Exit(1)


def _repo_root() -> Path:
    """The git work tree holding the current directory (DVC keeps data.dvc at its root)."""
    import subprocess

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise UserError(
            f"{Path.cwd()} is not inside a git repository; DVC versioning needs one (run git init)"
        ) from None
    return Path(top)


def _dvc_repo(p: Params) -> Path:
    """The repository root, set up for DVC with the configured default remote."""
    from gadms.versioning.dvc import ensure_repo

    root = _repo_root()
    ensure_repo(root, p.versioning.remote_name, p.versioning.remote_url)
    return root


def _data_dir(data: Optional[Path], p: Params) -> Path:
    return (data or p.paths.data_dir).resolve()


@data_app.command("version")
def data_version(
    data: Optional[Path] = CuratedOpt,
    push_: bool = typer.Option(True, "--push/--no-push", help="Also push it to the DVC remote."),
    skip_gate: bool = typer.Option(
        False, "--skip-gate", help="Version even without a passing quality gate on this exact data."
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Track the corpus with DVC (data.dvc) after checking that the quality gate passed on exactly this data.

    Prints the DVC hash: `gadms data checkout --hash HASH` brings this corpus back byte for byte.
    """
    from gadms.validation.gate import require_passed_gate
    from gadms.versioning.dvc import describe, push, track

    with user_errors():
        p = cli_params(params, set_)
        target = _data_dir(data, p)
        if not skip_gate:
            require_passed_gate(target, p.paths.reports_dir / "gate")
        root = _dvc_repo(p)
        version = track(root, target)
        typer.echo(f"versioned {describe(version)}")
        if push_:
            push(root, p.versioning.remote_name)
            typer.echo(f"pushed to DVC remote '{p.versioning.remote_name}'")
        typer.echo(f"commit the pointer with: git add {version.path}.dvc && git commit -m 'data {version.md5[:8]}'")


@data_app.command("push")
def data_push(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Upload the tracked corpus to the DVC remote (versioning.remote_name)."""
    from gadms.versioning.dvc import push

    with user_errors():
        p = cli_params(params, set_)
        root = _dvc_repo(p)
        push(root, p.versioning.remote_name)
        typer.echo(f"pushed to DVC remote '{p.versioning.remote_name}'")


@data_app.command("pull")
def data_pull(
    data: Optional[Path] = CorpusDirOpt,
    remote: Optional[str] = RemoteOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Download the corpus data.dvc points at from the DVC remote and check it out."""
    from gadms.versioning.dvc import describe, pull
    from gadms.versioning.remote import pull_from

    with user_errors():
        p = cli_params(params, set_)
        if remote is not None:
            version = pull_from(_repo_root(), _data_dir(data, p), remote)
        else:
            version = pull(_dvc_repo(p), _data_dir(data, p), p.versioning.remote_name)
        typer.echo(f"pulled {describe(version)}")


@data_app.command("checkout")
def data_checkout(
    md5: str = typer.Option(
        ...,
        "--hash",
        help="The DVC directory hash of the corpus (as printed by `gadms data version`, "
        "logged in MLflow as dvc.data_hash).",
    ),
    data: Optional[Path] = CorpusDirOpt,
    remote: Optional[str] = RemoteOpt,
    force: bool = typer.Option(
        False, "--force", help="Overwrite files in the corpus directory that are not in the DVC cache."
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Bring back exactly the corpus whose DVC hash is --hash (from the cache, else the remote); data.dvc follows.

    On another machine, in a clone of the project's git repository: gadms data checkout --hash HASH --remote URL
    (the hash of a model's corpus is the tag dvc.data_hash of its MLflow runs). With --remote no tracked file
    changes, data.dvc included (run again without --remote to point data.dvc at HASH). Every file is checked
    against its recorded md5.
    """
    from gadms.versioning.dvc import checkout_hash, describe
    from gadms.versioning.remote import checkout_from

    with user_errors():
        p = cli_params(params, set_)
        if remote is not None:
            version = checkout_from(_repo_root(), _data_dir(data, p), md5, remote, force=force)
        else:
            root = _dvc_repo(p)
            version = checkout_hash(root, _data_dir(data, p), md5, p.versioning.remote_name, force=force)
        typer.echo(f"checked out {describe(version)}")
