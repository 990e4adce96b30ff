"""The architecture the README draws, checked on the source: which rooms may import what.

Read from the import statements (module level and inside functions alike), so a lazy import
cannot hide an edge.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
VENDORS = {"litellm", "aiokafka", "faststream", "redis", "clickhouse_connect", "chdb"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> every absolute module name it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[_module_name(path)] = names
    return found


def _room(module: str) -> str:
    """`pipeline.stages.call` -> `stages`; top-level modules (`pipeline.settings`) are their own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


IMPORTS = _imports()


@pytest.mark.parametrize("room", ["stages", "worker"])
def test_stages_and_the_worker_reach_the_outside_only_through_transport_and_state(room: str) -> None:
    offenders = {module: sorted(n for n in names if n.split(".")[0] in VENDORS)
                 for module, names in IMPORTS.items() if _room(module) == room}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_the_seam_types_import_no_vendor_library() -> None:
    for seam in ("pipeline.transport.provider", "pipeline.transport.records", "pipeline.transport.offsets",
                 "pipeline.transport.intake_state", "pipeline.transport.connect_errors"):
        assert not {n for n in IMPORTS[seam] if n.split(".")[0] in VENDORS | {"faststream", "httpx"}}, seam


def test_no_import_cycle_between_rooms() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, names in IMPORTS.items():
        for name in names:
            if name.startswith("pipeline.") and _room(name) != _room(module):
                edges[_room(module)].add(_room(name))

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for room in sorted(edges) if (c := cycle_from(room))]
    assert cycles == []
