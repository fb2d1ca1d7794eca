"""`keel users` and `keel serve` as real processes: tokens printed once and stored hashed,
clear one-line errors, removal and rotation refusing old tokens, and a live server that
answers on a loopback port and stops on SIGTERM. Also `keel runs --since/--until`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import keel
from keel.server.app import create_app
from keel.store import AuditEntry, User, open_store
from tests.backends import at_rest, fresh_url
from tests.limits import WAIT
from tests.services.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = WAIT  # a bound, never a timing (tests/limits.py)


class Keel:
    """Runs `python -m keel.cli` against one store file in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.url = fresh_url(tmp_path)  # the session's backend (KEEL_TEST_STORE)
        self.env = {
            **os.environ,
            "KEEL_STORE": self.url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keel.cli", *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    def add(self, name: str, role: str, *extra: str) -> str:
        res = self("users", "add", name, "--role", role, *extra)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def store_bytes(self) -> bytes:
        return at_rest(self.url)


@pytest.fixture
def cli(tmp_path: Path) -> Keel:
    return Keel(tmp_path)


def _one_line_error(res: subprocess.CompletedProcess[str], message: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stdout == ""


def test_add_prints_the_token_once_and_stores_only_its_hash(cli: Keel) -> None:
    res = cli("users", "add", "alice", "--role", "reviewer", "--groups", "payments, accounts")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert res.stdout == token + "\n"  # stdout is the token alone, so scripts can capture it
    assert token.startswith("keel_") and len(token) > 50
    assert "shown once" in res.stderr and "alice" in res.stderr and token not in res.stderr
    secret = token.split("_", 2)[2]
    raw = cli.store_bytes()
    assert raw and token.encode() not in raw and secret.encode() not in raw
    (row,) = asyncio.run(_users(cli.url))
    assert row.token_hash.startswith("sha256$") and secret not in row.token_hash
    assert row.groups == ("payments", "accounts")


async def _users(url: str) -> list[User]:
    store = open_store(url)
    try:
        return await store.list_users()
    finally:
        await store.close()


def test_list_as_text_and_json_never_shows_tokens(cli: Keel) -> None:
    tokens = [cli.add("bob", "viewer"), cli.add("ada", "admin", "--groups", "*")]
    res = cli("users", "list")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["ada\tadmin\t*", "bob\tviewer\t-"]
    res = cli("users", "list", "--json")
    assert json.loads(res.stdout) == [
        {"name": "ada", "role": "admin", "groups": ["*"]},
        {"name": "bob", "role": "viewer", "groups": []},
    ]
    for token in tokens:
        assert token.split("_", 2)[2] not in res.stdout


def test_bad_role_and_duplicate_name_are_one_clear_line(cli: Keel) -> None:
    _one_line_error(
        cli("users", "add", "eve", "--role", "owner"),
        "unknown role 'owner'; use one of viewer, reviewer, admin",
    )
    cli.add("eve", "viewer")
    _one_line_error(cli("users", "add", "eve", "--role", "admin"), "user 'eve' already exists")
    assert json.loads(cli("users", "list", "--json").stdout) == [
        {"name": "eve", "role": "viewer", "groups": []}  # the first one, unchanged
    ]


def test_remove_deletes_the_user_and_refuses_unknown_names(cli: Keel) -> None:
    token = cli.add("carl", "reviewer")
    cli.add("dora", "viewer")
    res = cli("users", "remove", "carl")
    assert res.returncode == 0, res.stderr
    assert "removed 'carl'" in res.stdout
    assert [u["name"] for u in json.loads(cli("users", "list", "--json").stdout)] == ["dora"]
    assert asyncio.run(_me(cli.url, token)) == 401
    _one_line_error(cli("users", "remove", "carl"), "no user 'carl'")
    actors = {a.action: a.actor for a in asyncio.run(_audit(cli.url, "carl"))}
    assert actors["user_added"].startswith("cli:") and actors["user_removed"].startswith("cli:")


def test_rotate_prints_a_new_token_and_the_old_one_is_refused(cli: Keel) -> None:
    old = cli.add("fay", "reviewer", "--groups", "payments")
    res = cli("users", "rotate", "fay")
    assert res.returncode == 0, res.stderr
    new = res.stdout.strip()
    assert res.stdout == new + "\n" and new.startswith("keel_") and new != old
    assert "shown once" in res.stderr and new not in res.stderr
    assert new.split("_", 2)[2].encode() not in cli.store_bytes()
    assert asyncio.run(_me(cli.url, old)) == 401
    assert asyncio.run(_me(cli.url, new)) == 200
    # role and groups are kept
    assert json.loads(cli("users", "list", "--json").stdout) == [
        {"name": "fay", "role": "reviewer", "groups": ["payments"]}
    ]
    _one_line_error(cli("users", "rotate", "nobody"), "no user 'nobody'")


async def _me(url: str, token: str) -> int:
    """GET /api/v1/me with `token` through the API app, in process."""
    app = keel.App(url)
    try:
        transport = httpx.ASGITransport(app=create_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
            resp = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            return resp.status_code
    finally:
        await app.close()


# -- keel runs --since/--until ---------------------------------------------------------

T_10H = 1795600800.0  # 2026-11-25T10:00:00Z


def test_runs_since_and_until(cli: Keel) -> None:
    async def seed() -> None:
        store = open_store(cli.url)
        try:
            for run_id, at in [("t0", T_10H - 3600), ("t1", T_10H), ("t2", T_10H + 1800)]:
                await store.create_run(run_id, "archive", b"{}", at)
        finally:
            await store.close()

    asyncio.run(seed())

    def ids(*args: str) -> list[str]:
        res = cli("runs", "--workflow", "archive", "--json", *args)
        assert res.returncode == 0, res.stderr
        return [r["id"] for r in json.loads(res.stdout)]

    assert ids() == ["t2", "t1", "t0"]
    assert ids("--since", "2026-11-25T10:00") == ["t2", "t1"]
    assert ids("--until", "2026-11-25T12:00+02:00") == ["t0"]
    assert ids("--since", str(int(T_10H - 1)), "--until", str(int(T_10H + 1))) == ["t1"]
    _one_line_error(cli("runs", "--since", "last week"), "--since 'last week' is not a time")
    _one_line_error(cli("runs", "--until", "2026-02-30"), "--until '2026-02-30' is not a time")


# -- keel serve ------------------------------------------------------------------------


@pytest.fixture
def server(cli: Keel) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = cli.dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cli.dir,
            env=cli.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, port, log
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL if it has not exited within the deadline."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE)


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"keel serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                client.get(f"http://127.0.0.1:{port}/api/v1/me")
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"keel serve did not answer on port {port}:\n{log.read_text()}")
            time.sleep(0.05)


def test_serve_answers_with_the_api_and_stops_on_sigterm(
    cli: Keel, server: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    token = cli.add("gil", "reviewer", "--groups", "payments")
    proc, port, log = server
    _wait_until_serving(proc, port, log)
    base = f"http://127.0.0.1:{port}/api/v1"
    with httpx.Client(trust_env=False, timeout=WAIT) as client:
        anon = client.get(f"{base}/me")
        assert anon.status_code == 401 and anon.headers["WWW-Authenticate"] == "Bearer"
        me = client.get(f"{base}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json() == {"name": "gil", "role": "reviewer", "groups": ["payments"]}
        # the CLI and the running server share the store: a rotation applies at once
        new = cli("users", "rotate", "gil").stdout.strip()
        old = client.get(f"{base}/me", headers={"Authorization": f"Bearer {token}"})
        assert old.status_code == 401
        fresh = client.get(f"{base}/me", headers={"Authorization": f"Bearer {new}"})
        assert fresh.status_code == 200

    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
        pytest.fail(f"keel serve ignored SIGTERM:\n{log.read_text()}")
    text = log.read_text()
    # Uvicorn shuts down gracefully, then re-raises the signal it caught (exit -SIGTERM)
    assert proc.returncode in (0, -signal.SIGTERM), text
    assert "Finished server process" in text
    assert f"the review console at http://127.0.0.1:{port}/ and the JSON API at /api/v1" in text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/me", timeout=2.0, trust_env=False)


async def _audit(url: str, target: str) -> list[AuditEntry]:
    store = open_store(url)
    try:
        return await store.audit_log(target)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("console.example", True),
    ],
)
def test_serve_says_remote_reviewers_need_https(
    cli: Keel, monkeypatch: pytest.MonkeyPatch, host: str, warned: bool
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from keel.cli import cli as keel_cli

    served: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.append(host))
    monkeypatch.setenv("KEEL_STORE", cli.url)
    res = CliRunner().invoke(keel_cli, ["serve", "--host", host])
    assert res.exit_code == 0 and served == [host], res.output
    assert "decided runs resume in a worker: keel worker MODULE" in res.stderr
    assert ("need HTTPS" in res.stderr) is warned
