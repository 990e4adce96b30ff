"""Migration files are split into statements on `;` outside literals and comments."""

from __future__ import annotations

from pipeline.transport.clickhouse_ddl import migrations, sql_statements


def test_a_semicolon_in_a_comment_or_a_literal_does_not_cut_a_statement() -> None:
    script = (
        "-- adds b; and c\n"
        "ALTER TABLE t ADD COLUMN b String DEFAULT 'x;y' -- trailing; comment\n;\n"
        "ALTER TABLE t ADD COLUMN c String COMMENT 'it''s; fine', ADD COLUMN d String DEFAULT 'a\\';b';\n"
        "-- only a comment; at the end\n"
    )
    assert sql_statements(script) == [
        "ALTER TABLE t ADD COLUMN b String DEFAULT 'x;y'",
        "ALTER TABLE t ADD COLUMN c String COMMENT 'it''s; fine', ADD COLUMN d String DEFAULT 'a\\';b'",
    ]


def test_every_shipped_migration_splits_into_statements_without_comments() -> None:
    for _, name, sql in migrations():
        statements = sql_statements(sql.format(database="db"))
        assert statements, name
        assert not any(s.startswith("--") or s.endswith(";") for s in statements), name
