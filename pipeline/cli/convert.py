"""`pipeline config convert`: a LiteLLM Proxy config.yaml rewritten as our models.yaml and routing.yaml.

The written files load with `load_catalog` into the same catalog as the LiteLLM config itself
(references such as `os.environ/NAME` and `{secret_name}` are kept as written, never resolved),
so a deployment can move to our format at its own pace. What does not map is printed by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from pipeline.catalog.errors import ConfigError

config_app = typer.Typer(help="Work with configuration files (LiteLLM Proxy configs included).",
                         no_args_is_help=True)
_out = Console()
_err = Console(stderr=True, soft_wrap=True)

_ROUTING = """\
# Routing policy. A LiteLLM config has none: requests name their `model` (its fallbacks are in
# models.yaml). Add routes per task_type here, e.g.  summarize: {candidates: [gpt-4o, claude]}
routes: {}
"""


def convert_files(source: Path, out_dir: Path, *, force: bool = False) -> tuple[list[Path], tuple[str, ...]]:
    """Write models.yaml (and routing.yaml unless one is there) into `out_dir`; returns the files
    written and the warnings. Raises ConfigError for an unusable config, FileExistsError rather
    than overwrite models.yaml without `force`."""
    from pipeline.catalog.litellm_config import read_litellm_config

    converted = read_litellm_config(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    models_file, routing_file = out_dir / "models.yaml", out_dir / "routing.yaml"
    if models_file.exists() and not force:
        raise FileExistsError(models_file)
    header = [f"# Converted from the LiteLLM config {source} by `pipeline config convert`."]
    header += [f"# not converted: {w}" for w in converted.warnings]
    body = yaml.safe_dump(converted.models, sort_keys=False, allow_unicode=True, width=110)
    models_file.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    written = [models_file]
    if not routing_file.exists():
        routing_file.write_text(_ROUTING, encoding="utf-8")
        written.append(routing_file)
    return written, converted.warnings


@config_app.command("convert")
def convert(
    source: Annotated[Path, typer.Argument(help="The LiteLLM Proxy config.yaml (or router-mode provider record).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write models.yaml / routing.yaml into.")] = Path(
        "config"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing models.yaml.")] = False,
) -> None:
    """Convert a LiteLLM Proxy config into models.yaml (+ routing.yaml), printing what does not map.

    Example: pipeline config convert litellm/config.yaml --out config/
    """
    from pipeline.catalog import load_catalog

    try:
        written, warnings = convert_files(source, out, force=force)
    except ConfigError as exc:
        _err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    except FileExistsError as exc:
        _err.print(f"[red]{exc.args[0]} exists[/red] (use --force to overwrite it)")
        raise typer.Exit(1) from None
    for warning in warnings:
        _err.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    for path in written:
        _out.print(f"wrote {path}")
    try:
        load_catalog(out)  # what was written must load here too (environment, an existing routing.yaml)
    except ConfigError as exc:
        _err.print(f"[red]the written files do not load in this environment:[/red] {exc}")
        raise typer.Exit(1) from None
