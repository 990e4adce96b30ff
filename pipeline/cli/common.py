"""What every `pipeline` command shares: the consoles, settings and config loading, flag checks.

The command modules (`services.py`, `requests.py`, `queries.py`, `tooling.py`) print through the
same two consoles and stop with the same exit codes on a bad config or contradictory flags, so
those live here once. Kept light: it imports only typer, rich and the settings class, because
every `pipeline` invocation imports it before a command runs.
"""

from __future__ import annotations

from typing import Any, Literal

import typer
from rich.console import Console

from pipeline.settings import Settings

console = Console()
if not console.is_terminal:  # piped or captured: tables are read later, do not squeeze them to 80 columns
    console.width = 160
err = Console(stderr=True, soft_wrap=True)  # an error names a path: never broken mid-word to fit a width
#: `--cost-preference` choices: pipeline.catalog.routing.CostPreference, spelled out to keep start-up light.
CostPreferenceName = Literal["listed", "cheapest", "balanced", "quality"]


def load_settings(*, service: bool = False) -> Settings:
    """Services (run, sink) log JSON lines by default; interactive commands log plain text."""
    from pipeline.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format if service else "text")
    return settings


def catalog_or_exit(settings: Settings) -> Any:
    """Load the config or stop with exit code 2 and a message naming file, entry and problem."""
    from pipeline.catalog import ConfigError, load_catalog

    try:
        return load_catalog(settings.config_dir, settings.litellm_config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def fallbacks_flag(fallback: list[str] | None, no_fallbacks: bool) -> list[str] | None:
    """`--fallback M` (repeated) or `--no-fallbacks` ([]); neither: None, the request says nothing."""
    if fallback and no_fallbacks:
        err.print("[red]--fallback and --no-fallbacks contradict each other[/red]")
        raise typer.Exit(2)
    return [] if no_fallbacks else (fallback or None)
