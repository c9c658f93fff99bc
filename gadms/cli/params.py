"""``gadms params show``: the validated parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import ParamsOpt, SetOpt

params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)


@params_app.command("show")
def params_show(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the validated parameters (file + overrides + defaults) as YAML."""
    with user_errors():
        p = cli_params(params, set_)
        typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False), nl=False)
