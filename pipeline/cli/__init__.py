"""The `pipeline` command: run, sink, demo, simulate, send, report, check, schemas (see `pipeline --help`)."""

from pipeline.cli.main import app, main

__all__ = ["app", "main"]
