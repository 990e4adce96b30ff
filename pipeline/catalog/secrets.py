"""Secrets by reference: provider keys are named in the catalog and read at call time.

A deployment names its key in one of three ways (never the key itself):
- `api_key_env: NAME`: the environment variable NAME;
- `api_key_file: /run/secrets/openai`: a file, as Kubernetes and Docker mount secrets (one
  trailing newline is stripped);
- `api_key: <reference>`: a string made of references, each resolved at call time:
  `${NAME}` or LiteLLM's `os.environ/NAME` (the environment), and `{secret_name}` (the secrets
  directory `PIPELINE_SECRETS_DIR`, one file per secret, then the mapping in the secrets file
  `PIPELINE_SECRETS_FILE`, YAML or JSON).

Nothing is cached: rotating a file or an environment variable takes effect on the next call.
Errors (`SecretNotFound`) name the reference and where it was looked for, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

#: `${NAME}` / `${NAME:-default}`, `os.environ/NAME` (the whole value), `{secret_name}`.
_ENV_BRACED = r"\$\{(?P<env>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
_SECRET = r"\{(?P<secret>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\}"
_REFERENCE = re.compile(f"{_ENV_BRACED}|{_SECRET}")
_LITELLM_ENV = re.compile(r"^os\.environ/(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SecretNotFound(LookupError):
    """A reference that does not resolve. The message names it and never holds a secret."""


class SecretLookup(Protocol):
    """Where `{secret_name}` references are read from (`SecretSources`, or a test double)."""

    def secret(self, name: str) -> str: ...


@dataclass(frozen=True, slots=True)
class SecretSources:
    """The secrets directory and file of `PIPELINE_SECRETS_DIR` / `PIPELINE_SECRETS_FILE`.

    Read on every lookup (no cache), so a rotated secret is used on the next call."""

    directory: Path | None = None
    file: Path | None = None

    @classmethod
    def from_settings(cls, settings: object) -> SecretSources:
        directory = getattr(settings, "secrets_dir", None)
        file = getattr(settings, "secrets_file", None)
        return cls(Path(directory) if directory else None, Path(file) if file else None)

    def where(self) -> str:
        places = [f"PIPELINE_SECRETS_DIR ({self.directory})" if self.directory else "",
                  f"PIPELINE_SECRETS_FILE ({self.file})" if self.file else ""]
        return " or ".join(p for p in places if p) or "nowhere: set PIPELINE_SECRETS_DIR or PIPELINE_SECRETS_FILE"

    def secret(self, name: str) -> str:
        if not _SECRET_NAME.match(name) or name in (".", ".."):
            raise SecretNotFound(f"invalid secret name {name!r}")
        if self.directory is not None:
            path = self.directory / name
            if path.is_file():
                return read_secret_file(path, what=f"secret {name!r}")
        if self.file is not None:
            value = self._mapping().get(name)
            if value is not None:
                if not isinstance(value, str | int):
                    raise SecretNotFound(f"secret {name!r} in {self.file} is not a string")
                return str(value)
        raise SecretNotFound(f"secret {name!r} not found in {self.where()}")

    def _mapping(self) -> dict[str, object]:
        assert self.file is not None
        try:
            data = yaml.safe_load(self.file.read_text(encoding="utf-8"))  # JSON is YAML
        except FileNotFoundError:
            raise SecretNotFound(f"secrets file {self.file} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretNotFound(f"secrets file {self.file} cannot be read: {type(exc).__name__}") from None
        except yaml.YAMLError:
            # The parser's message may quote the file's text, i.e. a secret: say only where.
            raise SecretNotFound(f"secrets file {self.file} is not valid YAML or JSON") from None
        if not isinstance(data, dict):
            raise SecretNotFound(f"secrets file {self.file} must hold a mapping of name: value")
        return {str(k): v for k, v in data.items()}


def read_secret_file(path: Path, *, what: str = "key file") -> str:
    """A mounted secret: the file's text without its trailing newline (`echo` and editors add one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretNotFound(f"{what}: file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretNotFound(f"{what}: file {path} cannot be read: {type(exc).__name__}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise SecretNotFound(f"{what}: file {path} is empty")
    return value


def is_reference(value: str) -> bool:
    """Whether `value` is made of references (a literal key in the catalog is refused)."""
    return bool(_LITELLM_ENV.match(value) or _REFERENCE.search(value))


def referenced_names(value: str) -> list[str]:
    """The references in `value`, as `pipeline check` names them: `env NAME`, `secret NAME`."""
    match = _LITELLM_ENV.match(value)
    if match:
        return [f"env {match['name']}"]
    return [f"env {m['env']}" if m["env"] else f"secret {m['secret']}" for m in _REFERENCE.finditer(value)]


def resolve(value: str, secrets: SecretLookup | None, environ: Mapping[str, str] | None = None) -> str:
    """Replace every reference in `value`; raises SecretNotFound naming the first missing one."""
    env = os.environ if environ is None else environ
    match = _LITELLM_ENV.match(value)
    if match:
        return _env(match["name"], None, env)

    def sub(m: re.Match[str]) -> str:
        if m["env"]:
            return _env(m["env"], m["default"], env)
        if secrets is None:
            raise SecretNotFound(f"secret {m['secret']!r}: no secrets source (set PIPELINE_SECRETS_DIR "
                                 "or PIPELINE_SECRETS_FILE)")
        return secrets.secret(m["secret"])

    return _REFERENCE.sub(sub, value)


def _env(name: str, default: str | None, env: Mapping[str, str]) -> str:
    value = env.get(name)
    if value:
        return value
    if default is not None:
        return default
    raise SecretNotFound(f"environment variable {name} is not set")


class KeyReference(Protocol):
    """What a catalog deployment says about its key (the fields, never a value)."""

    @property
    def api_key_env(self) -> str | None: ...
    @property
    def api_key_file(self) -> str | None: ...
    @property
    def api_key_ref(self) -> str | None: ...


def key_source(ref: KeyReference) -> str | None:
    """How a deployment's key is named, for messages: `env OPENAI_API_KEY`, `file /run/...`."""
    if ref.api_key_env:
        return f"env {ref.api_key_env}"
    if ref.api_key_file:
        return f"file {ref.api_key_file}"
    if ref.api_key_ref:
        return ", ".join(referenced_names(ref.api_key_ref))
    return None


def resolve_key(ref: KeyReference, secrets: SecretLookup | None = None) -> str | None:
    """The key now (None: the deployment names none); SecretNotFound when it does not resolve."""
    if ref.api_key_env:
        return _env(ref.api_key_env, None, os.environ)
    if ref.api_key_file:
        return read_secret_file(Path(ref.api_key_file))
    if ref.api_key_ref:
        value = resolve(ref.api_key_ref, secrets)
        if not value:
            raise SecretNotFound(f"api_key {', '.join(referenced_names(ref.api_key_ref))} resolved to an empty key")
        return value
    return None
