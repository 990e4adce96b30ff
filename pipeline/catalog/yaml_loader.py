"""YAML loading with `${VAR}` / `${VAR:-default}` interpolation and file-naming errors."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.catalog.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_LITELLM_ENV = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


#: Keys whose values are kept as written: a set of names, or a test on the name.
Deferred = frozenset[str] | Callable[[str], bool]


def _is_deferred(key: object, deferred: Deferred) -> bool:
    return deferred(str(key)) if callable(deferred) else key in deferred


def _interpolate(value: Any, file: Path, where: str, deferred: Deferred = frozenset(),
                 litellm_env: bool = False) -> Any:
    if isinstance(value, str):
        env = _LITELLM_ENV.match(value) if litellm_env else None
        if env:
            if env.group(1) not in os.environ:
                raise ConfigError(file, where, f"environment variable {env.group(1)} is not set")
            return os.environ[env.group(1)]

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(file, where, f"environment variable {name} is not set and has no default")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: v if _is_deferred(k, deferred) else
                _interpolate(v, file, f"{where}.{k}" if where else str(k), deferred, litellm_env)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, file, f"{where}[{i}]", deferred, litellm_env) for i, v in enumerate(value)]
    return value


def load_yaml_mapping(
    file: Path, *, deferred: Deferred = frozenset(), litellm_env: bool = False
) -> dict[str, Any]:
    """Read one YAML file that must hold a mapping; interpolate environment variables.

    Values under a key in `deferred` (models.yaml's `api_key`, or a name test) are kept as written: they are
    secret references, resolved at call time (`catalog/secrets.py`), never at load. With
    `litellm_env`, a whole value `os.environ/NAME` (LiteLLM's form) is read from the environment too.
    """
    return interpolate(read_yaml_mapping(file), file, deferred=deferred, litellm_env=litellm_env)


def interpolate(data: dict[str, Any], file: Path, *, deferred: Deferred = frozenset(),
                litellm_env: bool = False) -> dict[str, Any]:
    """Replace environment references in a mapping read from `file` (see `load_yaml_mapping`)."""
    result: dict[str, Any] = _interpolate(data, file, "", deferred, litellm_env)
    return result


def read_yaml_mapping(file: Path) -> dict[str, Any]:
    """One YAML file that must hold a mapping, as written (no interpolation: a converter keeps references)."""
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
    return data
