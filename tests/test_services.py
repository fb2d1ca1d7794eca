"""The App-level services the server and CLI use instead of the store: each answers
what its routes and commands need, on a real (fresh SQLite) store."""

from __future__ import annotations

import time
from collections.abc import Callable

import keel
from keel.hitl.inbox import Inbox
from keel.llm.costs import Costs
from keel.maintenance import Maintenance
from keel.presence import workers
from keel.server.identity import Identity
from keel.server.sessions import Sessions
from keel.store.records import ENDED, PurgeScope
from tests.limits import WAIT


async def test_identity_adds_lists_signs_in_rotates_and_removes(
    make_app: Callable[..., keel.App],
) -> None:
    identity = Identity(make_app())
    token = await identity.add("rita", "reviewer", ["payments"], by="test")
    [rita] = await identity.list()
    assert (rita.name, rita.role, rita.groups) == ("rita", "reviewer", ("payments",))
    assert rita.created_at is not None
    assert await identity.get("rita") == rita and await identity.get("nobody") is None
    assert await identity.authenticate(token) == rita
    assert await identity.authenticate(token + "x") is None
    new = await identity.rotate("rita", by="test")
    assert await identity.authenticate(token) is None
    assert await identity.authenticate(new) == rita
    await identity.remove("rita", by="test")
    assert await identity.list() == [] and await identity.authenticate(new) is None


async def test_sessions_start_load_and_end(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    identity = Identity(app)
    rita = await identity.authenticate(await identity.add("rita", "admin"))
    assert rita is not None
    sessions = Sessions(app, ttl=3600)
    cookie, session = await sessions.start(rita, "10.0.0.7")
    assert await sessions.load(cookie) == session
    await sessions.end(cookie)
    assert await sessions.load(cookie) is None


async def test_costs_inbox_workers_and_maintenance_on_an_empty_store(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def hello(ctx: keel.Context, name: str) -> str:
        return f"hi {name}"

    handle = await app.start(hello, {"name": "ada"})
    assert await handle.result(WAIT) == "hi ada"
    costs = Costs(app)
    assert await costs.spent(run_id=handle.id) == 0.0
    assert await costs.report("run") == [] and await costs.per_run() == {}
    inbox = Inbox(app)
    assert await inbox.waiting(["approval"], "default") == 0
    assert await inbox.decided("approval") == []
    assert await inbox.of_run(handle.id) == ([], [])
    assert all(w.embedded for w in await workers(app))
    upkeep = Maintenance(app)
    scope = PurgeScope(ended_before=time.time() + 60, statuses=ENDED)
    counted = await upkeep.purge(scope, time.time(), dry_run=True)
    assert counted.runs == 1
    assert (await upkeep.purge(scope, time.time())).runs == 1
    assert (await upkeep.reclaim_space()).size_bytes > 0
    assert await upkeep.payload_keys() == {}
