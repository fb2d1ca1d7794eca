"""`keel store migrate` and `keel store check`, on Postgres and SQLite: hosts migrating at
once do it once, an older Postgres schema is refused until migrated (or auto_migrate),
the upgrade path runs its steps, and check says what is wrong in one line per check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from keel.cli import cli
from keel.errors import ConfigError
from keel.store import StoreOptions, open_store, postgres_schema
from keel.store._sqlite_schema import MIGRATIONS, SCHEMA
from keel.store.ops import Probe
from keel.store.sql.schema import VERSION
from tests.limits import WAIT
from tests.services import postgres as service

ROOT = Path(__file__).resolve().parent.parent


def keel(*args: str) -> tuple[int, str, str]:
    """`keel ARGS` in this process (KEEL_STORE from the test's environment)."""
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no keel.toml of the repository's
    monkeypatch.delenv("KEEL_STORE", raising=False)
    for name in list(os.environ):
        if name.startswith(("KEEL_PG_", "KEEL_AUTO_MIGRATE")):
            monkeypatch.delenv(name)


def _set_version(url: str, version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE keel_schema SET version = %s", (version,))


def _versions(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM keel_schema")]


def _created(url: str) -> None:
    store = open_store(url)
    asyncio.run(store.close())


# -- migrate on Postgres -------------------------------------------------------------


def test_four_hosts_migrating_an_empty_database_at_once_create_it_once(tmp_path: Path) -> None:
    url = service.fresh_database()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KEEL_STORE": url}
    cmd = [sys.executable, "-m", "keel", "store", "migrate", "--json"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, **pipes) for _ in range(4)]
    outs = [p.communicate(timeout=WAIT) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    actions = sorted(json.loads(out)["action"] for out, _ in outs)
    assert actions == ["created", "current", "current", "current"]
    assert _versions(url) == [VERSION]
    with psycopg.connect(url, autocommit=True) as conn:
        (runs,) = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'runs'").fetchone()
    assert runs == 1


def test_an_older_postgres_schema_is_refused_on_open_until_migrated() -> None:
    url = service.fresh_database()
    _created(url)
    _set_version(url, VERSION - 1)
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert f"schema v{VERSION - 1}, this Keel needs v{VERSION}: run `keel store migrate`" in str(
        caught.value
    )
    assert _versions(url) == [VERSION - 1]  # a worker starting up changed nothing


def test_a_worker_of_the_newer_keel_stops_with_one_line(tmp_path: Path) -> None:
    url = service.fresh_database()
    _created(url)
    _set_version(url, VERSION - 1)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KEEL_STORE": url}
    app = str(ROOT / "tests" / "apps" / "cli_app.py")
    done = subprocess.run([sys.executable, "-m", "keel", "worker", app], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WAIT)  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: store postgresql://postgres@") and "keel store migrate" in line


@pytest.fixture
def test_step(monkeypatch: pytest.MonkeyPatch) -> str:
    """A test-only upgrade step to the current version (Postgres has no older schema)."""
    monkeypatch.setattr(
        postgres_schema, "STEPS", {VERSION: "CREATE TABLE test_step_ran (x INTEGER)"}
    )
    return "test_step_ran"


def _has_table(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        (found,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(found)


def test_auto_migrate_lets_a_worker_upgrade_on_open(test_step: str) -> None:
    url = service.fresh_database()
    _created(url)
    _set_version(url, VERSION - 1)
    store = open_store(url, options=StoreOptions(auto_migrate=True))
    asyncio.run(store.close())
    assert _versions(url) == [VERSION] and _has_table(url, test_step)


def test_migrate_plans_then_upgrades_then_has_nothing_to_do(
    test_step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.fresh_database()
    _created(url)
    _set_version(url, VERSION - 1)
    monkeypatch.setenv("KEEL_STORE", url)
    code, out, _ = keel("store", "migrate", "--dry-run")
    assert code == 0, out
    assert f"would upgrade v{VERSION - 1} → v{VERSION} (steps v{VERSION})" in out
    assert _versions(url) == [VERSION - 1] and not _has_table(url, test_step)
    code, out, _ = keel("store", "migrate")
    assert code == 0 and f"upgraded v{VERSION - 1} → v{VERSION}" in out
    assert _versions(url) == [VERSION] and _has_table(url, test_step)
    code, out, _ = keel("store", "migrate", "--json")
    assert code == 0 and json.loads(out)["message"] == f"already at v{VERSION}"


def test_migrate_refuses_a_newer_schema_and_one_it_has_no_path_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = service.fresh_database()
    _created(url)
    monkeypatch.setenv("KEEL_STORE", url)
    _set_version(url, VERSION + 1)
    code, _, err = keel("store", "migrate")
    assert code == 2 and f"newer than this Keel (v{VERSION}); upgrade Keel" in err
    _set_version(url, 3)
    code, _, err = keel("store", "migrate")
    assert code == 2 and "schema v3, which this Keel cannot upgrade" in err
    assert _versions(url) == [3]


# -- migrate on SQLite ---------------------------------------------------------------


def _sqlite_store_at(path: Path, version: int) -> None:
    """A store file as Keel v`version` made it (the history in _sqlite_schema)."""
    script = SCHEMA + "".join(MIGRATIONS[v] for v in range(2, version + 1))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(f"{script}PRAGMA user_version={version};")


def _user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_sqlite_migrate_creates_upgrades_and_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "new.db"
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{new}")
    code, out, _ = keel("store", "migrate", "--dry-run")
    assert code == 0 and f"would create schema v{VERSION}" in out and not new.exists()
    code, out, _ = keel("store", "migrate")
    assert code == 0 and f"created schema v{VERSION}" in out and _user_version(new) == VERSION
    old = tmp_path / "old.db"
    _sqlite_store_at(old, VERSION - 2)
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{old}")
    code, out, _ = keel("store", "migrate", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["steps"] == [VERSION - 1, VERSION]
    assert _user_version(old) == VERSION - 2
    code, out, _ = keel("store", "migrate")
    assert code == 0 and f"upgraded v{VERSION - 2} → v{VERSION}" in out
    assert _user_version(old) == VERSION


# -- check ---------------------------------------------------------------------------


def _checks(out: str) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_check_passes_on_a_current_store_of_either_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.fresh_database()
    _created(url)
    for store in (url, f"sqlite:///{tmp_path}/keel.db"):
        monkeypatch.setenv("KEEL_STORE", store)
        keel("store", "migrate")
        code, out, err = keel("store", "check", "--json")
        assert code == 0, err
        checks = _checks(out)
        assert {c: checks[c]["status"] for c in checks} == {
            "connect": "ok", "schema": "ok", "clock": "ok",
        }  # fmt: skip
        assert checks["schema"]["found"] == VERSION
    code, out, _ = keel("store", "check")  # the table people read
    assert code == 0 and "schema   ok    v" in out


def test_check_fails_an_older_postgres_schema_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = service.fresh_database()
    _created(url)
    _set_version(url, VERSION - 1)
    monkeypatch.setenv("KEEL_STORE", url)
    code, _, err = keel("store", "check")
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: schema: v{VERSION - 1}, this Keel needs v{VERSION}: run `keel store migrate`"
    ]
    monkeypatch.setenv("KEEL_AUTO_MIGRATE", "true")  # workers will upgrade it: a warning
    code, out, _ = keel("store", "check", "--json")
    assert code == 0 and _checks(out)["schema"]["status"] == "warn"


def test_check_says_an_unreachable_server_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", "postgresql://keel:hunter2@127.0.0.1:1/keel")
    code, out, err = keel("store", "check")
    assert code == 3
    (line,) = err.strip().splitlines()
    assert line.startswith("error: connect: unreachable: store postgresql://keel@127.0.0.1:1/keel")
    assert "hunter2" not in out + err


@pytest.mark.parametrize(("skew", "status", "code"), [(2.5, "warn", 0), (11.0, "fail", 1)])
def test_check_judges_clock_skew_against_the_lease(
    skew: float, status: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/keel.db")

    async def skewed(self: Probe) -> float:
        return time.time() + skew

    monkeypatch.setattr(Probe, "now", skewed)
    got, out, err = keel("store", "check", "--json")
    clock = _checks(out)["clock"]
    assert (got, clock["status"]) == (code, status)
    assert clock["fail_above_s"] == 10.0  # lease 30 s / 3
    assert not (tmp_path / "keel.db").exists()  # checking a store never creates one
    if status == "fail":
        assert "error: clock: skew +11.0" in err and "lease 30 s / 3 = 10 s" in err



# -- docs/deploy.md ------------------------------------------------------------------

DEPLOY = ROOT / "docs" / "deploy.md"


def _blocks(lang: str) -> list[str]:
    import re

    return re.findall(rf"```{lang}\n(.*?)```", DEPLOY.read_text(), re.S)


def test_deploy_doc_store_commands_run_as_written(tmp_path: Path) -> None:
    url = service.fresh_database()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KEEL_STORE": url}
    lines = [ln.split("#")[0].split() for b in _blocks("sh") for ln in b.splitlines()]
    commands = [ln for ln in lines if ln[:2] == ["keel", "store"]]
    assert len(commands) >= 5
    for cmd in commands:
        done = subprocess.run([sys.executable, "-m", *cmd], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=WAIT)  # fmt: skip
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"


def test_deploy_doc_keel_toml_is_read_as_it_says(tmp_path: Path) -> None:
    from keel import config

    (toml,) = _blocks("toml")
    (tmp_path / "keel.toml").write_text(toml)
    url, _ = config.load()
    assert url.startswith("postgresql://keel@db.internal:5432/keel")
    assert config.store_options() == StoreOptions(password_file="/etc/keel/pg-password")
