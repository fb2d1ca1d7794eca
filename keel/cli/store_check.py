"""`keel store check`: can this host use the store? Connectivity, schema version and
clock skew, each judged ok / warn / fail with a one-line reason.

Thresholds (docs/deploy.md says why):
- schema: this Keel's version is ok; none yet warns (the first `keel store migrate` or
  worker creates it); older fails on Postgres unless `auto_migrate` (workers refuse to
  start on it), warns on SQLite (upgraded on open); newer always fails.
- clock: the store's clock minus this host's. Up to `SAME_CLOCK` (1 s) is ok; beyond it
  warns (workers correct timers by the offset, but what this host stamps itself, like
  heartbeats and logs, is off by it); beyond a heartbeat interval (lease / 3) fails:
  other hosts would misjudge this host's workers as dead (or dead ones as live) by a
  whole heartbeat.

Example:
    >>> clock_check(0.2, lease_seconds=30).status
    'ok'
    >>> clock_check(12.0, lease_seconds=30).status
    'fail'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from keel.engine.clock import SAME_CLOCK, clock_offset
from keel.errors import StoreError
from keel.store.ops import describe, probe
from keel.store.options import StoreOptions
from keel.store.sql.migrate import MIGRATE
from keel.store.sql.schema import VERSION


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: `status` is `ok`, `warn` or `fail`; `detail` one line."""

    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, **self.data}


@dataclass(frozen=True, slots=True)
class Report:
    """Every check of one store, and the exit code they add up to: 0 when none failed,
    3 when the store could not be reached, else 1."""

    backend: str
    where: str
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        failed = {c.name for c in self.checks if c.status == "fail"}
        if "connect" in failed:
            return 3
        return 1 if failed else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "store": self.where,
            "ok": self.exit_code == 0,
            "checks": [c.as_dict() for c in self.checks],
        }


async def check(url: str, options: StoreOptions, lease_seconds: float) -> Report:
    """Reach the store at `url` and judge it (see the module's thresholds)."""
    backend, where = describe(url)
    checks: list[Check] = []
    try:
        async with probe(url, options) as p:
            rtt = await p.round_trip()
            server = p.server
            if backend == "postgres":
                about = (
                    f"Postgres {server['server_version']},"
                    f" max_connections {server['max_connections']}"
                )
            else:
                about = f"SQLite {server['sqlite_version']}"
                if not server["exists"]:
                    about += ", no file yet (created on first open)"
            ms = round(rtt * 1000, 2)
            checks.append(Check("connect", "ok", f"round trip {ms} ms ({about})",
                                {"round_trip_ms": ms, **server}))  # fmt: skip
            checks.append(schema_check(await p.version(), backend, options.auto_migrate))
            checks.append(clock_check(await clock_offset(p.now), lease_seconds))
    except StoreError as exc:
        checks.append(Check("connect", "fail", connect_reason(exc), {"kind": exc.data.get("kind")}))
    return Report(backend, where, checks)


def schema_check(found: int, backend: str, auto_migrate: bool) -> Check:
    """The schema version found (0: none) against this Keel's."""
    data = {"found": found, "needed": VERSION}
    if found == VERSION:
        return Check("schema", "ok", f"v{found}, this Keel's", data)
    if found == 0:
        return Check("schema", "warn", f"none yet: `{MIGRATE}` (or the first worker) creates"
                     f" v{VERSION}", data)  # fmt: skip
    if found > VERSION:
        return Check("schema", "fail", f"v{found} is newer than this Keel (v{VERSION}):"
                     " upgrade Keel on this host", data)  # fmt: skip
    if backend == "postgres" and not auto_migrate:
        return Check("schema", "fail", f"v{found}, this Keel needs v{VERSION}: run `{MIGRATE}`",
                     data)  # fmt: skip
    return Check("schema", "warn", f"v{found}: upgraded to v{VERSION} when first opened", data)


def clock_check(offset: float, lease_seconds: float) -> Check:
    """The store's clock minus this host's, in seconds, judged against the lease."""
    limit = lease_seconds / 3
    data = {"offset_s": round(offset, 3), "warn_above_s": SAME_CLOCK, "fail_above_s": limit}
    said = f"skew {offset:+.3f} s (the store's clock minus this host's)"
    if abs(offset) <= SAME_CLOCK:
        return Check("clock", "ok", said, data)
    if abs(offset) <= limit:
        return Check("clock", "warn", f"{said}, over {SAME_CLOCK:g} s: sync this host's clock"
                     " (NTP)", data)  # fmt: skip
    return Check("clock", "fail", f"{said}, over a heartbeat interval (lease {lease_seconds:g} s"
                 f" / 3 = {limit:g} s): other hosts would misjudge this host's workers;"
                 " sync its clock (NTP)", data)  # fmt: skip


def connect_reason(exc: StoreError) -> str:
    """Why the store could not be reached, in one line (no password)."""
    reason = " ".join(str(exc.data.get("reason") or exc.message).split())
    if exc.data.get("sqlstate") in ("28P01", "28000") or re.search(
        r"password authentication failed|no password supplied", reason
    ):
        return (
            f"{exc.data.get('store') or 'the store'} refused the login ({reason}): check the"
            " user and password (pg_password_file, PGPASSWORD or ~/.pgpass)"
        )
    kind = exc.data.get("kind")
    said = " ".join(exc.message.split())
    return f"{kind}: {said}" if kind in ("unreachable", "full", "read-only") else said
