"""The one exception a bad configuration raises, naming file, entry and problem."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration file is unusable; start-up stops with this message."""

    def __init__(self, file: Path | str, entry: str, problem: str) -> None:
        self.file = str(file)
        self.entry = entry
        self.problem = problem
        super().__init__(f"{self.file}: {entry or '<top level>'}: {problem}")

    @classmethod
    def from_validation(cls, file: Path | str, error: ValidationError, prefix: str = "") -> ConfigError:
        """Report the first pydantic error as a dotted entry path (`routes.summarize.candidates`)."""
        first = error.errors()[0]
        parts = [prefix] if prefix else []
        for loc in first["loc"]:
            parts.append(f"[{loc}]" if isinstance(loc, int) else str(loc))
        entry = ".".join(parts).replace(".[", "[")
        problems = "; ".join(e["msg"] for e in error.errors()[:3])
        return cls(file, entry, problems)
