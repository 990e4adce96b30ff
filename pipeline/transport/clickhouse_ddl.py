"""The packaged ClickHouse migrations (`clickhouse_migrations/*.sql`) and how a file becomes
statements: the same DDL runs on chDB and on a ClickHouse server, one statement per command.
"""

from __future__ import annotations

from importlib import resources


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every packaged migration, in order."""
    out = []
    for entry in resources.files("pipeline.transport.clickhouse_migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def sql_statements(script: str) -> list[str]:
    """A migration file's statements: split on `;` outside string literals and `--` comments (a
    `;` in a comment or a string must not cut a statement), comments dropped."""
    statements, current, i = [], [], 0
    quote: str | None = None
    while i < len(script):
        char = script[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and i + 1 < len(script):  # an escaped character inside a literal
                current.append(script[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]
