"""The Postgres server the engine bench runs against, and a fresh database per workload.

Either a throwaway server of the bench's own (`tests/services/postgres.py`
`start_server()`: PG 15 from Debian's packages, `initdb` in a temp dir, a free
loopback port, stopped by PID at the end), or an existing one given as a URL
(`--pg`). Every workload of every system gets an empty database of its own,
dropped after it, so sizes and WAL figures belong to that workload alone.

The throwaway server runs as the test suite's does: fsync=off,
synchronous_commit=off, full_page_writes=off (no commit waits for a disk).
With `durable=True` it is restarted with Postgres's defaults (all three on),
so a commit waits for its WAL flush. Both systems always share the same server.

Example:
    >>> with bench_server(durable=False) as pg:  # doctest: +SKIP
    ...     url = pg.fresh_database("keel")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from _harness import REPO

# Shown in the table header: what decides how much a commit costs.
SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
_DURABLE_OPTS = "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"


def _services() -> Any:
    """tests/services/postgres.py (it lives with the tests; the bench reuses it)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.services import postgres

    return postgres


def binaries_available() -> bool:
    """True when this machine can start a throwaway Postgres (initdb, pg_ctl, psql)."""
    svc = _services()
    return all(svc.binary(name) for name in ("initdb", "pg_ctl", "psql"))


@dataclass
class BenchServer:
    """Where the bench's databases go, and what the server is set to."""

    admin_url: str  # a database to CREATE/DROP the bench's databases from
    pid: int | None  # the postmaster, when the bench started it (for its CPU time)
    owned: bool
    settings: dict[str, str] = dataclasses.field(default_factory=dict)

    def fresh_database(self, prefix: str) -> str:
        """An empty database on the server, as a URL (CREATE DATABASE from template0)."""
        import psycopg

        name = f"bench_{prefix}_{uuid.uuid4().hex[:10]}".lower()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return _with_db(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database from `fresh_database` (closing what a killed child left open)."""
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def header(self) -> str:
        """One line for the table title: the server and its durability settings."""
        where = "throwaway server" if self.owned else "existing server"
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items() if k != "server_version")
        return f"Postgres {self.settings.get('server_version', '?')} ({where}): {shown}"


def _with_db(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` instead (the stores take URLs, not conninfo)."""
    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


def check_url(url: str) -> str | None:
    """Why `url` cannot be the bench's server URL, or None."""
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        return f"expected postgresql://user@host:port/dbname, got {url!r}"
    return None


def _read_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in SETTINGS}  # type: ignore[index]


def _restart_durable(svc: Any, srv: Any) -> Any:
    """Restart a throwaway server with fsync, synchronous_commit and full-page writes on."""
    data = srv.root / "data"
    opts = f"-h {srv.host} -p {srv.port} -k {srv.root} -c max_connections=400 {_DURABLE_OPTS}"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg_ctl = svc.binary("pg_ctl")
    cmd = [*as_user, pg_ctl, "-D", str(data), "-l", str(srv.root / "log"), "-o", opts]
    subprocess.run([*cmd, "-w", "restart"], check=True, capture_output=True, timeout=120)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return dataclasses.replace(srv, pid=pid)


class ServerError(Exception):
    """The bench's Postgres could not be started or reached (the section is skipped)."""


@contextlib.contextmanager
def bench_server(url: str | None = None, durable: bool = False) -> Iterator[BenchServer]:
    """The server for this bench run: `url`'s, or a throwaway one stopped at the end."""
    import psycopg

    if url is not None:
        server = BenchServer(admin_url=url, pid=None, owned=False)
        try:
            server.settings = _read_settings(url)
        except psycopg.Error as exc:
            raise ServerError(f"cannot use --pg {url}: {exc}") from None
        yield server
        return
    svc = _services()
    try:
        srv = svc.start_server()
    except svc.Unavailable as exc:
        raise ServerError(f"no throwaway Postgres: {exc}") from None
    try:
        if durable:
            try:
                srv = _restart_durable(svc, srv)
            except subprocess.CalledProcessError as exc:
                raise ServerError(f"restart with fsync on failed: {exc.stderr!r}") from None
        server = BenchServer(admin_url=srv.url(), pid=srv.pid, owned=True)
        server.settings = _read_settings(server.admin_url)
        yield server
    finally:
        svc.stop_server(srv)
