"""The `pipeline` command: run the worker, the simulator and the demo; send; report.

This module holds the typer `app` and registers every command, in the order `pipeline --help`
lists them; the commands themselves live by responsibility in `services.py`, `requests.py`,
`queries.py`, `tooling.py` and `convert.py`. Those import their heavy machinery (litellm, Kafka,
ClickHouse clients) inside the command functions, so start-up stays light.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from pipeline.cli.convert import config_app
from pipeline.cli.queries import models, report
from pipeline.cli.requests import route, send
from pipeline.cli.services import run, simulate, sink
from pipeline.cli.tooling import check, demo, docs, schemas

__all__ = ["app", "main"]

app = typer.Typer(
    help="Event-driven LLM request pipeline: Kafka in, routed LiteLLM calls, replies out, costs in ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for command in (run, sink, simulate, send, route, models, report, demo, check, docs, schemas):
    app.command()(command)
app.add_typer(config_app, name="config")  # `pipeline config convert`


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app()
    sys.stdout.flush()
