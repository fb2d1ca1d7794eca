"""Session state (`ctx.session`): one suite over Keel's store (SQLite, or Postgres with
KEEL_TEST_STORE=postgres) and a real redis-server. Journaled reads replay exactly, writes
apply once (compare-and-set included) across re-execution and SIGKILL, sessions are
isolated, and bad input is refused before anything is written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.store.session_state import SessionStateStore
from tests.apps import session_app
from tests.limits import WAIT
from tests.services.redis_server import free_port


@pytest.fixture(params=["store", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """Where session values live: None (Keel's store) or the redis:// URL."""
    if request.param == "store":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def make(store_url: str, backend: str | None) -> AsyncIterator[Callable[[], keel.App]]:
    apps: list[keel.App] = []

    def build() -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), session_store=backend)
        _workflows(app)
        apps.append(app)
        return app

    yield build
    for app in apps:
        await app.close()


def _workflows(app: keel.App) -> None:
    @app.workflow
    async def ops(ctx: keel.Context, calls: list[list[Any]]) -> list[Any]:
        out = []
        for name, *args in calls:
            if name == "get":
                out.append(await ctx.session.get(*args))
            elif name == "set":
                out.append(await ctx.session.set(args[0], args[1], ttl=args[2]))
            elif name == "delete":
                out.append(await ctx.session.delete(args[0]))
            else:
                out.append(await ctx.session.compare_and_set(*args[:3], ttl=args[3]))
        return out

    @app.workflow
    async def incr(ctx: keel.Context) -> int:
        while True:
            cur = await ctx.session.get("n")
            if await ctx.session.compare_and_set("n", cur, (cur or 0) + 1):
                return int((cur or 0) + 1)

    @app.workflow
    async def read_wait_read(ctx: keel.Context) -> list[Any]:
        first = await ctx.session.get("k")
        await ctx.wait_for("go")
        return [first, await ctx.session.get("k")]

    @app.workflow
    async def whose(ctx: keel.Context) -> str:
        return ctx.session.id


def _sid() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"  # Redis is shared by the test session


async def _run(app: keel.App, wf: str, inp: Any = None, session: str | None = None) -> Any:
    handle = await app.start(wf, inp, session=session)
    return await handle.result(timeout=WAIT)


async def test_get_set_delete_compare_and_set(make: Callable[[], keel.App]) -> None:
    app, sid = make(), _sid()
    calls = [
        ["get", "a", "dflt"],
        ["set", "a", {"x": [1, 2]}, None],
        ["get", "a"],
        ["cas", "a", {"x": [1, 3]}, 5, None],  # holds something else: refused
        ["cas", "a", {"x": [1.0, 2]}, 5, None],  # equal JSON (1 == 1.0): applies
        ["cas", "b", None, "new", None],  # None: only if absent
        ["cas", "b", None, "again", None],
        ["get", "b"],
        ["delete", "b"],
        ["delete", "b"],
        ["get", "b", 0],
    ]
    got = await _run(app, "ops", {"calls": calls}, session=sid)
    assert got == ["dflt", None, {"x": [1, 2]}, False, True, True, False, "new", True, False, 0]
    assert await _run(app, "ops", {"calls": [["get", "a"]]}, session=sid) == [5]


async def test_sessions_are_isolated_and_a_run_without_one_has_its_own(
    make: Callable[[], keel.App],
) -> None:
    app, one, two = make(), _sid(), _sid()
    await _run(app, "ops", {"calls": [["set", "k", "one", None]]}, session=one)
    assert await _run(app, "ops", {"calls": [["get", "k"]]}, session=two) == [None]
    assert await _run(app, "ops", {"calls": [["get", "k"]]}) == [None]
    handle = await app.start("whose")
    assert await handle.result(timeout=WAIT) == handle.id
    assert (await app.get_run(handle.id)).session == handle.id
    runs = await app.list_runs(session=one)
    assert [r.session for r in runs] == [one]


async def test_ttl_expires_a_value(make: Callable[[], keel.App], wait_until: Any) -> None:
    app, sid = make(), _sid()
    calls = [["set", "short", 1, 0.001], ["set", "long", 2, 3600.0]]
    await _run(app, "ops", {"calls": calls}, session=sid)

    async def expired() -> bool:
        return await app.session_store.session_get(sid, "short") is None

    await wait_until(expired, "the 1 ms value to expire")
    got = await _run(app, "ops", {"calls": [["get", "short", "gone"], ["get", "long"]]}, sid)
    assert got == ["gone", 2]
    # An expired key counts as absent for compare-and-set.
    cas = await _run(app, "ops", {"calls": [["cas", "short", None, 3, None]]}, session=sid)
    assert cas == [True]


async def test_concurrent_runs_incrementing_by_cas_count_exactly_n(
    make: Callable[[], keel.App],
) -> None:
    app, sid, n = make(), _sid(), 12
    handles = [await app.start("incr", session=sid) for _ in range(n)]
    results = [await h.result(timeout=WAIT) for h in handles]
    assert sorted(results) == list(range(1, n + 1))  # each saw a value nobody else did
    assert await _run(app, "ops", {"calls": [["get", "n"]]}, session=sid) == [n]


async def test_a_resumed_run_sees_what_its_first_attempt_read(
    make: Callable[[], keel.App], wait_until: Any
) -> None:
    app, sid = make(), _sid()
    await _run(app, "ops", {"calls": [["set", "k", "before", None]]}, session=sid)
    handle = await app.start("read_wait_read", session=sid)

    async def waiting() -> bool:
        return (await app.get_run(handle.id)).status is keel.RunStatus.WAITING

    await wait_until(waiting, "the run to wait")
    await _run(app, "ops", {"calls": [["set", "k", "after", None]]}, session=sid)
    await app.signal(handle.id, "go")
    # Resuming replays the workflow from the top: the first read is the journaled one.
    assert await handle.result(timeout=WAIT) == ["before", "after"]


async def test_a_write_re_executed_after_a_crash_applies_once(
    make: Callable[[], keel.App],
) -> None:
    """The crash window: the write landed, its journal entry did not, another run wrote
    since. Re-executing the same writer changes nothing and reports that it applied."""
    store: SessionStateStore = make().session_store
    sid = _sid()
    assert await store.session_write(sid, "k", "1", writer="r1 session.set#0")
    assert await store.session_write(sid, "k", "2", writer="r2 session.set#0")
    assert await store.session_write(sid, "k", "1", writer="r1 session.set#0")  # re-executed
    entry = await store.session_get(sid, "k")
    assert entry is not None and (entry.value, entry.writer) == ("2", "r2 session.set#0")
    # A compare-and-set that won, then was overwritten: its re-execution still won.
    won = await store.session_write(sid, "c", "1", writer="r3 session.cas#0", expect=None)
    assert won
    assert await store.session_write(sid, "c", "2", writer="r4 x", expect="r3 session.cas#0")
    assert await store.session_applied(sid, "r3 session.cas#0")
    assert not await store.session_applied(sid, "r9 never")
    # A refused condition writes nothing (and leaves no receipt).
    assert not await store.session_write(sid, "c", "3", writer="r5 x", expect="r3 nope")
    assert not await store.session_applied(sid, "r5 x")


@pytest.mark.slow
async def test_sigkill_mid_run_counts_every_increment_once(
    worker_harness: Any, backend: str | None
) -> None:
    h = worker_harness
    app = session_app.build(h.url, session_store=backend)
    h.apps.append(app)
    env = {} if backend is None else {"KEEL_SESSION_STORE": backend}
    sid, n = _sid(), 40
    await app.start("count", {"n": n}, id="counter", session=sid, execute=False)

    async def counted(at_least: int) -> bool:
        entry = await app.session_store.session_get(sid, "count")
        return entry is not None and int(entry.value) >= at_least

    for target in (5, 18):
        proc = h.spawn("tests.apps.session_app", **env)
        await h.wait_until(
            lambda t=target: counted(t), timeout=WAIT, what=f"{target} increments", procs=[proc]
        )
        await h.kill(proc, app, "counter")
    final = h.spawn("tests.apps.session_app", **env)
    info = await h.wait_status(app, "counter", "SUCCEEDED", timeout=WAIT, procs=[final])
    assert info.result == n
    entry = await app.session_store.session_get(sid, "count")
    assert entry is not None and int(entry.value) == n


# -- bad input: refused with a clear error, nothing written ------------------------------


@pytest.mark.parametrize(
    ("session", "says"),
    [("", "is empty"), ("x" * 201, "201 characters"), ("a\x07b", "U+0007"), ("a b", "space")],
)
async def test_a_bad_session_id_is_refused_and_no_run_recorded(
    make: Callable[[], keel.App], session: str, says: str
) -> None:
    app = make()
    with pytest.raises(keel.InputError, match="session id") as err:
        await app.start("whose", session=session)
    assert says in err.value.message
    assert await app.list_runs() == []


async def test_a_run_id_keeps_its_session(make: Callable[[], keel.App]) -> None:
    app, sid = make(), _sid()
    await _run_id(app, "r1", sid)
    await _run_id(app, "r1", sid)  # the same start again: idempotent
    with pytest.raises(keel.InputError, match="belongs to session"):
        await app.start("whose", id="r1", session=_sid())


async def _run_id(app: keel.App, run_id: str, sid: str) -> None:
    await (await app.start("whose", id=run_id, session=sid)).result(timeout=WAIT)


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (["get", ""], keel.InputError, "session key '' is empty"),
        (["set", "k\n", 1, None], keel.InputError, "U+000A"),
        (["set", "k", None, None], keel.InputError, "use ctx.session.delete"),
        (["set", "k", 1, 0], keel.InputError, "more than 0 seconds"),
        (["set", "k", 1, "soon"], keel.InputError, "number of seconds"),
        (["cas", "k", None, None, None], keel.InputError, "cannot be set to None"),
    ],
)
async def test_bad_calls_fail_clearly_and_write_nothing(
    make: Callable[[], keel.App], call: list[Any], error: type[Exception], says: str
) -> None:
    app, sid = make(), _sid()
    handle = await app.start("ops", {"calls": [call]}, session=sid)
    with pytest.raises(keel.RunFailed) as failed:
        await handle.result(timeout=WAIT)
    assert failed.value.error is not None
    assert failed.value.error.type == error.__name__
    assert says in failed.value.error.message
    assert [s for s in await app.steps(handle.id) if s.kind.value == "session"] == []
    assert await app.session_store.session_get(sid, "k") is None


async def test_a_value_that_is_not_json_is_refused(make: Callable[[], keel.App]) -> None:
    app = make()

    @app.workflow
    async def odd(ctx: keel.Context) -> None:
        await ctx.session.set("k", object())

    handle = await app.start("odd")
    with pytest.raises(keel.RunFailed) as failed:
        await handle.result(timeout=WAIT)
    assert failed.value.error is not None
    assert failed.value.error.type == "SerializationError"
    assert "session key 'k'" in failed.value.error.message


async def test_unreachable_redis_says_where_and_fails_no_run(store_url: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = keel.App(store_url, settings=Settings(poll_interval=0.02), session_store=url)
    _workflows(app)
    try:
        with pytest.raises(keel.StoreError) as err:
            await app.session_store.session_get("s", "k")
        assert url in err.value.message and "No run was failed" in err.value.message
        # The embedded worker stops on the fault and the wait says why; the run is left
        # to resume from its journal (a `keel worker` pauses and retries instead).
        handle = await app.start("ops", {"calls": [["get", "k"]]}, session="s")
        with pytest.raises(keel.StoreError, match="is unreachable") as seen:
            await handle.result(timeout=WAIT)
        assert url in seen.value.message
        status = (await app.get_run(handle.id)).status
        assert status in (keel.RunStatus.RUNNING, keel.RunStatus.PENDING)
    finally:
        await app.close()


def test_an_unknown_session_store_is_a_config_error(store_url: str) -> None:
    app = keel.App(store_url, session_store="memcached://x")
    with pytest.raises(keel.ConfigError, match="redis://host:port/db"):
        app.session_store  # noqa: B018


def test_cli_run_with_a_session_and_runs_filter(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from keel.cli import cli
    from tests.backends import fresh_url

    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_POLL_INTERVAL", "0.02")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "keel_user_session_cli_app", raising=False)
    target = f"{Path(__file__).parent / 'apps' / 'session_cli_app.py'}:visit"
    r = CliRunner()
    for want in (1, 2):
        res = r.invoke(cli, ["run", target, "--session", "u1", "--id", f"v{want}", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["result"] == want
    res = r.invoke(cli, ["run", target, "--json"])  # a session of its own: starts at 1
    assert json.loads(res.stdout)["result"] == 1
    res = r.invoke(cli, ["runs", "--session", "u1", "--json"])
    assert sorted(x["id"] for x in json.loads(res.stdout)) == ["v1", "v2"]
    res = r.invoke(cli, ["show", "v2"])
    assert res.exit_code == 0 and "session: u1" in res.stdout
    res = r.invoke(cli, ["run", target, "--session", "a b"])
    assert res.exit_code != 0 and "session id 'a b' contains a space" in res.output


async def test_the_api_lists_the_runs_of_a_session(store_url: str) -> None:
    import httpx

    from keel.server.app import create_app
    from keel.server.auth import add_user

    app = keel.App(store_url)
    try:
        await app.store.create_run("a1", "archive", b"{}", 1.0, session="s1")
        await app.store.create_run("a2", "archive", b"{}", 2.0, session="s2")
        await app.store.create_run("a3", "archive", b"{}", 3.0)  # before sessions: its own
        token = await add_user(app.store, "vera", "viewer", [])
        transport = httpx.ASGITransport(app=create_app(app), client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
            for session, want in [("s1", ["a1"]), ("a3", ["a3"]), ("none", [])]:
                resp = await c.get(
                    f"/api/v1/runs?session={session}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert resp.status_code == 200, resp.text
                assert [r["id"] for r in resp.json()] == want
                assert all(r["session"] == session for r in resp.json())
    finally:
        await app.close()
