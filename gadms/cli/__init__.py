"""The ``gadms`` command line.

Every command reads params.yaml (``--params`` picks another file) and accepts
``--set section.key=value`` overrides. User errors print one line starting
with ``error:`` and exit with status 2.

One module per command group: :mod:`~gadms.cli.synth`, :mod:`~gadms.cli.curate`, :mod:`~gadms.cli.params`,
:mod:`~gadms.cli.train` (and ``evaluate``), :mod:`~gadms.cli.data` (and ``validate``), :mod:`~gadms.cli.search`
(``index``, ``search``, ``serve``), :mod:`~gadms.cli.serve_model`, :mod:`~gadms.cli.pipeline` (``pipeline``,
``deploy``, ``demo``) and :mod:`~gadms.cli.ablate`. The options they share are declared once in
:mod:`~gadms.cli.options`; parameter loading and one-line errors are :mod:`~gadms.cli.common`; how help reads is
:mod:`~gadms.cli.help_layout`, installed when the command line runs, not on import.
"""

from __future__ import annotations

from typing import Optional

import typer

from gadms.cli import ablate, curate, data, params, pipeline, search, serve_model, synth, train
from gadms.cli.help_layout import LaidOutGroup

app = typer.Typer(
    cls=LaidOutGroup,  # flags without <bool>, brackets kept, paragraphs reflowed (see gadms.cli.help_layout)
    help="GA-DMS text-based person retrieval: curate web images into a person-caption corpus, "
    "gate its quality, version it, train and evaluate CLIP with GA-DMS.",
    epilog="Exit status: 0 done; 1 the quality gate or a pipeline stage failed; "
    "2 a user error (one line starting with error:); "
    "70 an unexpected failure (one line naming the command and a log file with the traceback, under "
    "$XDG_STATE_HOME/gadms/logs or ~/.local/state/gadms/logs); 130 interrupted (Ctrl-C); 143 stopped by SIGTERM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(synth.synth_app, name="synth")
app.add_typer(curate.curate_app, name="curate")
app.add_typer(params.params_app, name="params")
app.add_typer(train.train_app, name="train")
app.add_typer(data.data_app, name="data")
app.command("index")(search.index_command)
app.command("search")(search.search_command)
app.command("serve")(search.serve_command)
app.command("serve-model")(serve_model.serve_model)  # the champion over REST (MLflow's model server)
app.command("evaluate")(train.evaluate)
app.command("validate")(data.validate)
app.command("pipeline")(pipeline.pipeline)
app.add_typer(ablate.ablate_app, name="ablate")
app.command("deploy")(pipeline.deploy)
app.command("demo")(pipeline.demo)

# Nothing leaves this machine unasked: the usage reporting of the tools we drive stays off.
NO_TELEMETRY = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime). Beside two CPU-bound
# processes on 2 cores, spinning made a pre-training batch 0.8-15 s (mean 5.0 s); sleeping, 0.7-1.0 s (mean 0.79 s).
# Alone it costs nothing measurable (0.44 vs 0.45 s a batch) and changes no result. A user's own setting wins.
SHARE_CORES = {"OMP_WAIT_POLICY": "PASSIVE"}


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``gadms`` console script and of ``python -m gadms``.

    Args:
        args: the command line after ``gadms`` (default: ``sys.argv[1:]``).
    """
    import os
    import sys

    from gadms.crash import command_words, last_line_of_defence, run_app

    for key, value in {**NO_TELEMETRY, **SHARE_CORES}.items():
        os.environ.setdefault(key, value)
    words = list(sys.argv[1:] if args is None else args)
    with last_line_of_defence(lambda: command_words(typer.main.get_command(app), words)):
        status = run_app(app, words)
    sys.exit(status)
