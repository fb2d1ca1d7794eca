"""SQLite's spelling of what differs (`keel.store.sql.dialect`).

Example:
    >>> SQLiteDialect().placeholders("SELECT ?")
    'SELECT ?'
"""

from __future__ import annotations

from keel.store.sql.dialect import Dialect


class SQLiteDialect(Dialect):
    """SQLite 3.35+: `?` placeholders, `julianday` clock, `PRAGMA user_version`."""

    name = "sqlite"
    # julianday('now') is the statement's own time, the same in every worker process.
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    # SQLITE_MAX_VARIABLE_NUMBER of builds before 3.32 (999); later builds allow more.
    max_params = 999
    # Takes the write lock at once, so a lease check and the write it guards are one.
    begin_write = "BEGIN IMMEDIATE"
    # `+col`: a term SQLite's planner will not answer from an index on `col`.
    noindex = "+"
    real = "REAL"
    bigint = "INTEGER"  # every SQLite integer is 64-bit
    blob = "BLOB"
    payload = "TEXT"  # sealed values are stored as blobs in the same column
    serial_pk = "INTEGER PRIMARY KEY AUTOINCREMENT"
    without_rowid = " WITHOUT ROWID"

    def head(self, col: str) -> str:
        return f"CASE WHEN typeof({col}) = 'blob' THEN substr({col}, 1, 300) END"

    def json_array_agg(self, *items: str) -> str:
        return f"json_group_array(json_array({', '.join(items)}))"

    def version_sql(self) -> str:
        return "PRAGMA user_version"

    def set_version_sql(self, version: int) -> str:
        return f"PRAGMA user_version={int(version)}"

    def append_only(self, table: str) -> str:
        return (
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}\n"
            f"BEGIN SELECT RAISE(ABORT, 'the {table} log is append-only'); END;\n"
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}\n"
            f"BEGIN SELECT RAISE(ABORT, 'the {table} log is append-only'); END;\n"
        )

    def append_only_off(self, table: str) -> str:
        return f"DROP TRIGGER IF EXISTS {table}_no_update"

    def append_only_on(self, table: str) -> str:
        return (
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}\n"
            f"BEGIN SELECT RAISE(ABORT, 'the {table} log is append-only'); END"
        )
