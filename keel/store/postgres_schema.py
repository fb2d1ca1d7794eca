"""The Postgres store's schema: created on first open, upgraded only when asked.

A new database gets the whole current schema when the first process opens it (no setup
step). An older schema is not upgraded by a worker starting up, since workers of the
older Keel may still be running on other hosts: opening it raises a ConfigError that
names `keel store migrate` (or `auto_migrate` opts back in). Creating and upgrading run
in one transaction under an advisory lock, so hosts doing it at once do it once.

`STEPS` is the upgrade history, `{version: script}` (keel.store.sql.migrate): the first
Postgres schema is v15, so it is empty until the schema next changes; then the new
version's step is appended here and `keel.store.sql.schema` is changed to match.

Example:
    >>> with connect(info) as conn:  # doctest: +SKIP
    ...     print(migrate(conn, "postgresql://db/keel").message)
    created schema v15
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from keel.store.sql.migrate import Migration, plan, too_new, too_old
from keel.store.sql.postgres_dialect import PostgresDialect
from keel.store.sql.schema import VERSION, ddl

# pg_advisory_xact_lock's key for schema changes: any constant no other app uses ("keel").
SCHEMA_LOCK = 0x6B65656C
STEPS: dict[int, str] = {}
_DIALECT = PostgresDialect()


def read_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version stored in the database, 0 when it has none yet. Reads only
    (no DDL, no lock), so a role without CREATE rights can open a current store."""
    (table,) = conn.execute("SELECT to_regclass('keel_schema') IS NOT NULL").fetchone() or (0,)
    if not table:
        return 0
    row = conn.execute(_DIALECT.version_sql()).fetchone()
    return int(row[0]) if row else 0


def ensure(conn: psycopg.Connection[Any], where: str, auto_migrate: bool = False) -> None:
    """On open: create a new database's schema; refuse an older one unless
    `auto_migrate` (then upgrade it) and a newer one always."""
    version = read_version(conn)
    if version == VERSION:
        return
    if version > VERSION:
        raise too_new(where, version, VERSION)
    if version and not auto_migrate:
        raise too_old(where, version, VERSION)
    migrate(conn, where)


def migrate(
    conn: psycopg.Connection[Any],
    where: str,
    dry_run: bool = False,
    steps: Mapping[int, str] | None = None,
) -> Migration:
    """Create or upgrade the schema to `VERSION` (idempotent; one host at a time), or
    with `dry_run` only say what that would do. `steps` defaults to `STEPS`."""
    steps = STEPS if steps is None else steps
    if dry_run:
        before = read_version(conn)
        return Migration(where, before, VERSION, plan(before, VERSION, steps, where), True)
    with conn.transaction():
        # Schema changes take what they take: a configured statement_timeout must not
        # cut an upgrade of a large table short (SET LOCAL ends with the transaction).
        conn.execute("SET LOCAL statement_timeout = 0")
        # One host at a time; the lock ends with the transaction. Whoever waited reads
        # the version the first one left, and has nothing left to do.
        conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        conn.execute(_DIALECT.version_table())
        row = conn.execute(_DIALECT.version_sql()).fetchone()
        before = int(row[0]) if row else 0
        todo = plan(before, VERSION, steps, where)
        if before == 0:
            conn.execute(ddl(_DIALECT))
        for version in todo:
            conn.execute(steps[version])
        if before != VERSION:
            conn.execute(_DIALECT.set_version_sql(VERSION))
    return Migration(where, before, VERSION, todo)
