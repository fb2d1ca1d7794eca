"""SQLite's spelling of what differs (`keel.store.sql.dialect`).

Example:
    >>> SQLiteDialect().placeholders("SELECT ?")
    'SELECT ?'
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.store.sql.dialect import Dialect

# FTS5 over memories' text and context, stemmed (porter); an external-content index, so
# the text is stored once. Memories are never updated in place (supersede closes a fact
# and adds a new one), so inserts and deletes are all the triggers follow.
MEMORY_FTS = """CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, context, content='memories', content_rowid='seq',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_fts_add AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text, context) VALUES (new.seq, new.text, new.context);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_drop AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, context)
    VALUES ('delete', old.seq, old.text, old.context);
END;
"""


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

    def memory_search(self) -> str:
        return MEMORY_FTS

    def memory_match(self, terms: Sequence[str]) -> str:
        # An FTS5 string ("...", with " doubled) is one token sequence, never syntax.
        return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)

    def memory_keyword(self, validity: str) -> str:
        # bm25() is lower for better matches: its negation is the score.
        return (
            "SELECT m.seq, -bm25(memories_fts) FROM memories_fts"
            " JOIN memories m ON m.seq = memories_fts.rowid"
            f" WHERE memories_fts MATCH ? AND m.namespace = ? AND {validity}"
            " ORDER BY bm25(memories_fts) LIMIT ?"
        )

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
