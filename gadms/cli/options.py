"""The command-line options several ``gadms`` commands take, declared once.

A command names one of these as a parameter default (``params: Optional[Path] = ParamsOpt``); the option's
flag, help text and default are the same wherever it appears.
"""

from __future__ import annotations

import typer

ParamsOpt = typer.Option(None, "--params", help="Parameter file (default: ./params.yaml, else built-in defaults).")
SetOpt = typer.Option(
    None, "--set", metavar="KEY=VALUE", help="Override one parameter, e.g. --set train.optimizer.lr=3e-4 (repeatable)."
)
SearchSetOpt = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override one parameter (repeatable).")
"""``--set`` as the ``gadms index|search|serve`` commands word it (without the example)."""

DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.")
SeedOpt = typer.Option(None, "--seed", help="Random seed (default: params seed).")
QuietOpt = typer.Option(False, "--quiet", help="No progress bar.")
QuietBarsOpt = typer.Option(False, "--quiet", help="No progress bars.")
"""``--quiet`` of the commands that show several progress bars (curation)."""

RootOpt = typer.Option(None, "--root", help="The benchmark directory or its parent (default: paths.benchmarks_dir).")
BenchmarkOpt = typer.Option(..., "--benchmark", help="cuhk-pedes | icfg-pedes | rstpreid.")
