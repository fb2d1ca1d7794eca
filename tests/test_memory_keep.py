"""`@app.tool(keep=Schema)`: the output is cut to Schema's fields inside the step, the full
output journaled out of line for audit; keel show says what was kept; replay is exact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.console import run_detail
from keel.engine.runtime import Settings
from keel.llm import Gateway, Reply, ScriptedModel
from keel.types import RunStatus, StepKind
from tests.limits import WAIT

FULL = {
    "id": "A-17",
    "status": "shipped",
    "eta": "2026-12-09",
    **{f"audit_{i}": "event " * 40 for i in range(9)},
}


class OrderView(BaseModel):
    id: str
    status: str
    eta: str


@pytest.fixture
async def make_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(model: ScriptedModel | None = None) -> keel.App:
        llm = Gateway({"m": model or ScriptedModel(lambda m: "ok")}, retry=keel.Retry(attempts=1))
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


async def _waiting(app: keel.App, run_id: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if (await app.get_run(run_id)).status is RunStatus.WAITING:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never waited")


async def test_output_is_cut_the_full_one_kept_out_of_line_and_replay_is_exact(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    runs: list[str] = []

    @app.tool(keep=OrderView)
    async def lookup(order: str) -> dict[str, Any]:
        runs.append(order)
        return FULL

    @app.workflow
    async def check(ctx: keel.Context) -> dict[str, Any]:
        view = await ctx.call(lookup, "A-17")
        assert isinstance(view, OrderView)
        await ctx.wait_for("go")  # suspends: what comes after replays the tool step
        return view.model_dump()

    handle = await app.start(check, {})
    await _waiting(app, handle.id)
    await app.signal(handle.id, "go", True)
    assert await handle.result(WAIT) == {"id": "A-17", "status": "shipped", "eta": "2026-12-09"}
    assert runs == ["A-17"]  # replay returned the recorded cut output
    steps = {s.key: s for s in await app.steps(handle.id)}
    assert steps["lookup#0"].output == {"id": "A-17", "status": "shipped", "eta": "2026-12-09"}
    full = steps["lookup#0/full#0"]
    assert full.kind is StepKind.VALUE and full.blob and full.output is None
    assert full.input == {"kept": ["id", "status", "eta"], "of": 12}
    assert json.loads(await app.store.load_blob(full.blob)) == FULL
    shown = _render(run_detail(await app.get_run(handle.id), await app.steps(handle.id)))
    assert f"kept 3 of 12 fields, full output blob {full.blob[:16]}" in shown


async def test_an_agent_sees_only_the_kept_fields(make_app: Callable[..., keel.App]) -> None:
    def fn(messages: list[dict[str, Any]]) -> Reply:
        if messages[-1]["role"] == "tool":
            return Reply(content=messages[-1]["content"])
        return Reply(tool_calls=[{"name": "lookup", "arguments": {"order": "A-17"}}])

    app = make_app(ScriptedModel(fn))

    @app.tool(keep=OrderView)
    async def lookup(order: str) -> dict[str, Any]:
        """Look up an order."""
        return FULL

    @app.workflow
    async def agent(ctx: keel.Context) -> str | None:
        return (await ctx.llm.agent("Where is A-17?", tools=[lookup])).content

    out = await (await app.start(agent, {})).result(WAIT)
    assert json.loads(out) == {"id": "A-17", "status": "shipped", "eta": "2026-12-09"}


async def test_an_output_without_the_kept_fields_fails_clearly(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool(keep=OrderView)
    async def lookup(order: str) -> dict[str, Any]:
        return {"id": order, "state": "shipped"}

    @app.tool(keep=OrderView)
    async def listing(order: str) -> list[str]:
        return [order]

    @app.workflow
    async def check(ctx: keel.Context, which: str) -> Any:
        return await ctx.call(lookup if which == "lookup" else listing, "A-17")

    handle = await app.start(check, {"which": "lookup"})
    with pytest.raises(keel.RunFailed) as err:
        await handle.result(WAIT)
    msg = str(err.value)
    assert "tool 'lookup'" in msg and "keep=OrderView" in msg and "status" in msg
    assert "eta" in msg and "the output has fields: id, state" in msg
    handle = await app.start(check, {"which": "listing"})
    with pytest.raises(keel.RunFailed, match="returned list, but keep=OrderView needs an object"):
        await handle.result(WAIT)


def test_keep_must_be_a_pydantic_model(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    with pytest.raises(keel.ConfigError, match="keep= takes a Pydantic model class"):

        @app.tool(keep=dict)  # type: ignore[arg-type]
        async def lookup(order: str) -> dict[str, Any]:
            return FULL


def _render(group: Any) -> str:
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(group)
    return console.export_text()
