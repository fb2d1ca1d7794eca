"""The store's connection settings: read from KEEL_* over keel.toml over defaults, bad
values named, and each one reaching Postgres (pool size, connect and statement timeouts,
a password from a file, application_name); a server with password auth proves the
password ones."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from keel import config
from keel.errors import ConfigError, StoreError
from keel.store import StoreOptions, open_store
from keel.store.postgres_connect import conninfo, default_name
from tests.limits import WAIT
from tests.services import postgres as service

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-pw"


@pytest.fixture(autouse=True)
def _clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("KEEL_PG_", "KEEL_AUTO_MIGRATE", "PGPASS")):
            monkeypatch.delenv(name)


# -- reading them --------------------------------------------------------------------


def test_defaults_then_keel_toml_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.store_options() == StoreOptions()
    (tmp_path / "keel.toml").write_text(
        "[keel]\npg_pool = 3\npg_connect_timeout = 4\npg_statement_timeout = 2.5\n"
        'pg_password_file = "/run/secrets/pg"\npg_application_name = "keel web"\n'
        "auto_migrate = true\n"
    )
    assert config.store_options() == StoreOptions(
        pool_size=3, connect_timeout=4, statement_timeout=2.5, password_file="/run/secrets/pg",
        application_name="keel web", auto_migrate=True,
    )  # fmt: skip
    monkeypatch.setenv("KEEL_PG_POOL", "12")
    monkeypatch.setenv("KEEL_AUTO_MIGRATE", "off")
    got = config.store_options()
    assert (got.pool_size, got.auto_migrate, got.connect_timeout) == (12, False, 4)


@pytest.mark.parametrize(
    ("env", "value", "said"),
    [
        ("KEEL_PG_POOL", "0", "setting pg_pool (KEEL_PG_POOL) must be a whole number >= 1, got 0"),
        ("KEEL_PG_POOL", "many", "setting pg_pool (KEEL_PG_POOL) must be a whole number, got"),
        ("KEEL_PG_CONNECT_TIMEOUT", "2.5", "pg_connect_timeout (KEEL_PG_CONNECT_TIMEOUT) must"),
        ("KEEL_PG_STATEMENT_TIMEOUT", "-1", "must be seconds >= 0 (0: no limit), got -1.0"),
        ("KEEL_PG_STATEMENT_TIMEOUT", "nan", "must be seconds >= 0"),
        ("KEEL_AUTO_MIGRATE", "sometimes", "auto_migrate (KEEL_AUTO_MIGRATE) must be true or"),
        ("KEEL_PG_PASSWORD_FILE", " ", "setting pg_password_file (KEEL_PG_PASSWORD_FILE) must"),
        ("KEEL_PG_APPLICATION_NAME", "a\nb", "setting pg_application_name"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(
    env: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        config.store_options()


def test_a_bad_toml_value_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text("[keel]\npg_pool = 2.5\n")
    with pytest.raises(ConfigError, match=r"pg_pool \(KEEL_PG_POOL\) must be a whole number"):
        config.store_options()


def test_code_arguments_are_checked_as_well() -> None:
    with pytest.raises(ConfigError, match="pool_size must be a whole number >= 1"):
        StoreOptions(pool_size=0)


# -- what they make of the connection -------------------------------------------------


def test_the_connection_string_carries_the_settings(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(f"{PASSWORD}\n")  # a trailing newline, as editors leave it
    opts = StoreOptions(connect_timeout=4, statement_timeout=1.5, password_file=str(secret))
    info = conninfo_to_dict(conninfo("postgresql://keel@db/keel?options=-c%20work_mem%3D8MB", opts))
    assert info["password"] == PASSWORD and info["connect_timeout"] == "4"
    assert info["options"] == "-c work_mem=8MB -c statement_timeout=1500"  # the URL's kept
    assert info["application_name"].startswith("keel ")
    named = conninfo(
        "postgresql://keel@db/keel?application_name=mine&connect_timeout=30", StoreOptions()
    )
    got = conninfo_to_dict(named)
    assert (got["application_name"], got["connect_timeout"]) == ("mine", "30")  # the URL's own


def test_the_default_application_name_says_command_host_and_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/keel", "worker", "app.py"])
    assert default_name() == f"keel worker {socket.gethostname()}:{os.getpid()}"
    monkeypatch.setattr(sys, "argv", ["serve.py"])
    assert default_name().startswith("keel app ")


def test_password_file_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the Postgres password file .*missing"):
        conninfo("postgresql://keel@db/keel", StoreOptions(password_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"password file .* is empty"):
        conninfo("postgresql://keel@db/keel", StoreOptions(password_file=str(tmp_path / "empty")))
    (tmp_path / "pw").write_text(PASSWORD)
    with pytest.raises(ConfigError, match="holds a password and pg_password_file is set too"):
        conninfo("postgresql://keel:x@db/keel", StoreOptions(password_file=str(tmp_path / "pw")))


def _activity(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    return int(n)


def test_pool_statement_timeout_and_name_reach_the_server() -> None:
    url = service.fresh_database()
    opts = StoreOptions(pool_size=2, statement_timeout=7, application_name="keel test-ops")
    store = open_store(url, options=opts)
    try:
        assert store._pool.max_size == 2  # type: ignore[attr-defined]
        asyncio.run(store.now())  # the pool's first connection is in use now
        assert _activity(service.server().url(), "keel test-ops") >= 1
        with psycopg.connect(conninfo(url, opts)) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
    finally:
        asyncio.run(store.close())


# -- a server that wants a password ---------------------------------------------------


@pytest.fixture(scope="module")
def locked() -> Iterator[service.Server]:
    """A server of our own where role `keel` must log in with PASSWORD."""
    try:
        srv = service.start_server()
    except service.Unavailable as exc:
        service.unavailable(str(exc))
    try:
        with psycopg.connect(srv.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE keel LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("CREATE DATABASE keel OWNER keel")
        hba = srv.root / "data" / "pg_hba.conf"
        rules = "host all keel 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rules + hba.read_text())  # the first matching line wins
        os.kill(srv.pid, signal.SIGHUP)  # reload
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                psycopg.connect(f"postgresql://keel@{srv.host}:{srv.port}/keel").close()
            except psycopg.OperationalError:
                break  # the password is wanted now
            time.sleep(0.05)
        yield srv
    finally:
        service.stop_server(srv)


def test_the_password_comes_from_a_file(locked: service.Server, tmp_path: Path) -> None:
    url = f"postgresql://keel@{locked.host}:{locked.port}/keel"
    with pytest.raises(StoreError):
        open_store(url)  # no password anywhere
    (tmp_path / "pw").write_text(f"{PASSWORD}\n")
    store = open_store(url, options=StoreOptions(password_file=str(tmp_path / "pw")))
    asyncio.run(store.close())


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=WAIT)  # fmt: skip


def test_check_tells_a_wrong_password_and_libpq_variables_work(
    locked: service.Server, tmp_path: Path
) -> None:
    url = f"postgresql://keel@{locked.host}:{locked.port}/keel"
    wrong = _cli(["store", "check"], {"KEEL_STORE": url, "PGPASSWORD": "nope"}, tmp_path)
    assert wrong.returncode == 3
    assert "refused the login" in wrong.stderr and "nope" not in wrong.stderr + wrong.stdout
    # keel.toml names the password file; the URL there holds no secret
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "keel.toml").write_text(f'[keel]\nstore = "{url}"\npg_password_file = "pw"\n')
    done = _cli(["store", "migrate"], {}, tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "keel.toml").unlink()
    ok = _cli(["store", "check"], {"KEEL_STORE": url, "PGPASSWORD": PASSWORD}, tmp_path)
    assert ok.returncode == 0, ok.stderr
