"""The neutral schema (`keel.store.sql.schema`) makes, on SQLite, the very store that
today's migrations make of a version-1 store: same tables, columns, keys, indexes and
guards. So a new store and an upgraded one never drift apart."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from keel.store._sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, upgrade_script


def _shape(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        rows = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        for kind, name, table, sql in rows:
            text = re.sub(r"\s+", " ", (sql or "").replace('"', "")).strip()
            if kind == "table":
                cols = db.execute(f"PRAGMA table_xinfo({name})").fetchall()
                out[f"table {name}"] = (cols, text.endswith("WITHOUT ROWID"))
            elif kind == "index":
                info = db.execute(f"PRAGMA index_xinfo({name})").fetchall()
                where = text.split(" WHERE ", 1)[1] if " WHERE " in text else None
                out[f"index {name}"] = (table, info, where)
            else:
                out[f"{kind} {name}"] = (table, text.replace("IF NOT EXISTS ", ""))
        out["version"] = db.execute("PRAGMA user_version").fetchone()
        out["auto_vacuum"] = db.execute("PRAGMA auto_vacuum").fetchone()
        return out
    finally:
        db.close()


def test_a_new_store_is_what_the_migrations_make(tmp_path: Path) -> None:
    new, migrated = tmp_path / "new.db", tmp_path / "migrated.db"
    db = sqlite3.connect(new, isolation_level=None)
    db.executescript(upgrade_script(0))
    db.close()
    history = "".join(MIGRATIONS[v] for v in range(2, SCHEMA_VERSION + 1))
    db = sqlite3.connect(migrated, isolation_level=None)
    db.executescript(
        f"PRAGMA auto_vacuum=INCREMENTAL;BEGIN;{SCHEMA}{history}"
        f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
    )
    db.close()
    got, want = _shape(new), _shape(migrated)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
