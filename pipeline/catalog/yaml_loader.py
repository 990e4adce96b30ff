"""YAML loading with `${VAR}` / `${VAR:-default}` interpolation and file-naming errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.catalog.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, file: Path, where: str) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(file, where, f"environment variable {name} is not set and has no default")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, file, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, file, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def load_yaml_mapping(file: Path) -> dict[str, Any]:
    """Read one YAML file that must hold a mapping; interpolate environment variables."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, where, f"invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping at the top level, got {type(data).__name__}")
    return _interpolate(data, file, "")
