"""The SQL layer's dialect seam: statements rendered once and cached, placeholders
rewritten outside quotes, and no SQLite-only SQL in the neutral query modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import keel.store.sql as sql_pkg
from keel.store.sql.core import renderer
from keel.store.sql.dialect import Renderer
from keel.store.sql.postgres_dialect import PostgresDialect
from keel.store.sql.sqlite_dialect import SQLiteDialect
from keel.store.sqlite import SQLiteStore

_DIALECT_MODULES = {"dialect.py", "sqlite_dialect.py", "postgres_dialect.py"}
# What only SQLite understands; the dialects say it, the queries never do.
_SQLITE_ONLY = (
    r"INSERT OR (IGNORE|REPLACE)",
    r"julianday",
    r"json_group_array",
    r"PRAGMA",
    r"WITHOUT ROWID",
    r"typeof\(",
    r"AUTOINCREMENT",
    r"IN doomed\b",
)


def test_the_neutral_modules_speak_no_sqlite_only_sql() -> None:
    found = []
    for path in sorted(Path(sql_pkg.__file__).parent.glob("*.py")):
        if path.name in _DIALECT_MODULES:
            continue
        text = path.read_text()
        found += [f"{path.name}: {p}" for p in _SQLITE_ONLY if re.search(p, text)]
    assert not found


def test_a_statement_is_rendered_once_then_read_from_the_cache() -> None:
    render = Renderer(SQLiteDialect(), {"now": "42.0"})
    first = render("SELECT {now} + ? FROM runs WHERE id IN (?, ?)")
    assert first == "SELECT 42.0 + ? FROM runs WHERE id IN (?, ?)"
    assert render("SELECT {now} + ? FROM runs WHERE id IN (?, ?)") is first


async def test_the_hot_path_does_no_string_work(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/keel.db")
    try:
        await store.get_run("r1")  # rendered here, once

        def refuse(sql: str) -> str:
            raise AssertionError(f"rendered again: {sql}")

        store._s.render = refuse  # type: ignore[assignment]
        for _ in range(3):
            assert await store.get_run("r1") is None
    finally:
        await store.close()


def test_postgres_placeholders_are_numbered_outside_quotes() -> None:
    pg = PostgresDialect()
    assert pg.placeholders("SELECT ? WHERE a = '?' AND \"b?\" = ? AND c IN (?,?)") == (
        "SELECT $1 WHERE a = '?' AND \"b?\" = $2 AND c IN ($3,$4)"
    )


@pytest.mark.parametrize(
    ("dialect", "day", "now"),
    [
        (SQLiteDialect(), "CAST(at / 86400 AS INTEGER) * 86400", "julianday('now')"),
        (PostgresDialect(), "FLOOR(at / 86400) * 86400", "statement_timestamp()"),
    ],
)
def test_fragments_with_an_argument(dialect: SQLiteDialect, day: str, now: str) -> None:
    render = renderer(dialect)
    assert render("SELECT {day:at}") == f"SELECT {day}"
    assert now in render("SELECT {now}")
    assert "s.kind = 'phase'" in render("SELECT {run_cols} FROM runs")


async def test_a_pinned_clock_is_the_one_statements_read(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/keel.db")
    try:
        store._now_sql = "1234.5"
        assert store._now_sql == "1234.5"
        assert await store.now() == 1234.5
    finally:
        await store.close()
