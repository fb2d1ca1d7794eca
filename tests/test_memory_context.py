"""Model calls assemble their context within a token budget: `budget=` and `blocks=` on
ctx.llm calls, the agent loop trimming its history each turn, the decisions journaled
with the model step (keel show) and on its span, and a replay that assembles nothing new.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import keel
from keel.console import context_summary, run_detail
from keel.engine.runtime import Settings
from keel.llm import Gateway, Reply, ScriptedModel
from keel.llm.context import assemble
from keel.memory import Block
from keel.memory.tokens import TokenCounter
from keel.types import RunStatus, StepKind
from tests.limits import WAIT

COUNT = TokenCounter().count  # the counter the assembler uses for a scripted model
BIG = {"order": "A-1", "status": "shipped", "log": ["scan at hub " * 20] * 10}


@pytest.fixture
async def make_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(model: ScriptedModel, **gateway: Any) -> keel.App:
        llm = Gateway({"m": model}, retry=keel.Retry(attempts=1), **gateway)
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


def _long_agent(app: keel.App, model: ScriptedModel, turns: int, **options: Any) -> Any:
    @app.tool
    async def lookup(n: int) -> dict[str, Any]:
        """Look up one order (a big record)."""
        return {**BIG, "n": n}

    @app.workflow
    async def sweep(ctx: keel.Context) -> dict[str, Any]:
        res = await ctx.llm.agent(
            "Check every order.",
            tools=[lookup],
            system="You are an operations agent.",
            max_turns=turns + 5,
            **options,
        )
        await ctx.wait_for("go")  # the run suspends: what follows it replays everything
        return {"content": res.content, "messages": res.messages}

    return sweep


def _script(turns: int) -> ScriptedModel:
    seen = {"n": 0}

    def fn(messages: list[dict[str, Any]]) -> Reply:
        seen["n"] += 1  # the model sees a trimmed conversation: it counts its own turns
        if seen["n"] <= turns:
            return Reply(tool_calls=[{"name": "lookup", "arguments": {"n": seen["n"]}}])
        return Reply(content=f"checked {turns} orders")

    return ScriptedModel(fn)


async def _waiting(app: keel.App, handle: Any) -> None:
    for _ in range(int(WAIT / 0.02)):
        if (await app.get_run(handle.id)).status is RunStatus.WAITING:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {handle.id} never waited")


async def _finish(app: keel.App, handle: Any) -> Any:
    await _waiting(app, handle)
    await app.signal(handle.id, "go", True)
    return await handle.result(WAIT)


async def test_a_thirty_step_agent_never_exceeds_its_budget_and_replays_exactly(
    make_app: Callable[..., keel.App],
) -> None:
    model = _script(30)
    app = make_app(model)
    sweep = _long_agent(app, model, 30, budget=3000)
    handle = await app.start(sweep, {})
    await _waiting(app, handle)
    calls_before = model.total
    assert calls_before == 31
    sent = [c["messages"] for c in model.calls]
    assert all(COUNT(m) + COUNT([], _tools(app)) <= 3000 for m in sent)
    # the run's full conversation is far over budget: the assembler trimmed it
    await app.signal(handle.id, "go", True)
    out = await handle.result(WAIT)
    assert out["content"] == "checked 30 orders" and len(out["messages"]) == 2 + 30 * 2 + 1
    assert model.total == calls_before  # the replay sent no model call again
    steps = [s for s in await app.steps(handle.id) if s.kind is StepKind.LLM]
    assert len(steps) == 31
    late = steps[-1].output["context"]
    assert late["tokens"] <= 3000 and late["budget"] == 3000
    history = next(b for b in late["blocks"] if b["name"] == "history")
    assert history["action"] == "truncated" and history["full"] > 3000
    # pinned: system and task went into every call, first
    for m in sent:
        assert m[0]["role"] == "system" and m[1]["content"] == "Check every order."
    # deterministic from the journaled inputs: the same assembly again
    for turn, s in enumerate(steps):
        convo = out["messages"][: 2 + 2 * turn]  # what the loop held at that turn
        tools = s.output["request"]["params"]["tools"]
        again = assemble(convo, [], 3000, None, tools, history_from=2)
        assert again.messages == s.output["request"]["messages"]
        assert again.record() == s.output["context"]
    # keel show prints the decisions; the span carries them
    shown = _render(run_detail(await app.get_run(handle.id), await app.steps(handle.id)))
    assert re.search(r"llm:agent#0 .* context \d+/3000 tok  → calls lookup", shown)
    assert context_summary(late).startswith(
        f"  context {late['tokens']}/3000 tok; truncated: history ("
    )
    spans = await app.trace(handle.id)
    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert chats and all(s.attributes["keel.context.tokens"] <= 3000 for s in chats)
    assert chats[-1].attributes["keel.context.truncated"] == ["history"]
    assert chats[-1].attributes["keel.context.included"] == ["system", "prompt"]


async def test_without_a_budget_the_context_grows_without_bound(
    make_app: Callable[..., keel.App],
) -> None:
    model = _script(30)
    app = make_app(model)
    sweep = _long_agent(app, model, 30)
    handle = await app.start(sweep, {})
    out = await _finish(app, handle)
    assert len(out["messages"]) == 63
    sizes = [COUNT(c["messages"]) for c in model.calls]
    assert sizes == sorted(sizes) and sizes[-1] > 10 * sizes[0] and sizes[-1] > 3000
    steps = [s for s in await app.steps(handle.id) if s.kind is StepKind.LLM]
    assert all(s.output.get("context") is None for s in steps)  # no window known: no record


async def test_blocks_go_between_system_and_prompt_and_are_cut_to_fit(
    make_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda messages: "ok")
    app = make_app(model, context_budget=400)  # the gateway's default budget

    @app.workflow
    async def answer(ctx: keel.Context) -> str:
        return await ctx.llm.text(
            "Is order A-1 late?",
            system="Be brief.",
            blocks=[
                Block("order", json.dumps(BIG), kind="previous"),
                Block("old-notes", "n" * 2000, kind="memory"),
            ],
        )

    handle = await app.start(answer, {})
    assert await handle.result(WAIT) == "ok"
    sent = model.calls[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "user"]
    assert sent[1]["content"].endswith("[… truncated to fit the context budget]")
    assert sent[2]["content"] == "Is order A-1 late?"
    (step,) = [s for s in await app.steps(handle.id) if s.kind is StepKind.LLM]
    record = step.output["context"]
    actions = {b["name"]: b["action"] for b in record["blocks"]}
    assert actions == {
        "system": "included",
        "order": "truncated",
        "old-notes": "dropped",
        "prompt": "included",
    }
    assert record["tokens"] <= 400


async def test_a_pinned_prompt_over_budget_fails_the_step_clearly(
    make_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda messages: "ok")
    app = make_app(model)

    @app.workflow
    async def too_long(ctx: keel.Context) -> str:
        return await ctx.llm.text("word " * 400, budget=100)

    handle = await app.start(too_long, {})
    with pytest.raises(keel.RunFailed) as err:
        await handle.result(WAIT)
    assert "ContextOverflow" in str(err.value) and "prompt: " in str(err.value)
    assert "budget of 100" in str(err.value)
    assert model.total == 0  # nothing was sent


async def test_bad_blocks_are_refused_clearly(make_app: Callable[..., keel.App]) -> None:
    app = make_app(ScriptedModel(lambda messages: "ok"))

    @app.workflow
    async def bad(ctx: keel.Context) -> str:
        return await ctx.llm.text("hi", blocks=["not a block"])  # type: ignore[list-item]

    handle = await app.start(bad, {})
    with pytest.raises(keel.RunFailed, match=r"blocks= takes keel\.memory\.Block objects"):
        await handle.result(WAIT)
    with pytest.raises(keel.ConfigError, match="context_budget is a positive number"):
        Gateway({"m": ScriptedModel(lambda m: "x")}, context_budget=0)


def _tools(app: keel.App) -> list[dict[str, Any]]:
    from keel.llm.facade import _tool_schema

    return [_tool_schema(app.registry.tools["lookup"])]


def _render(group: Any) -> str:
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(group)
    return console.export_text()


async def test_the_console_run_page_shows_the_context(
    make_app: Callable[..., keel.App],
) -> None:
    import html

    import httpx

    from keel.server.app import create_app
    from keel.server.auth import add_user
    from tests.services.pages import sign_in

    model = ScriptedModel(lambda messages: "ok")
    app = make_app(model)

    @app.workflow
    async def answer(ctx: keel.Context) -> str:
        notes = Block("notes", "n" * 3000, kind="memory", priority=1)
        return await ctx.llm.text("Is order A-1 late?", blocks=[notes], budget=300)

    handle = await app.start(answer, {}, id="ctx-1")
    assert await handle.result(WAIT) == "ok"
    token = await add_user(app.store, "ann", "viewer")
    transport = httpx.ASGITransport(app=create_app(app, secure_cookies=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        await sign_in(c, token)
        page = html.unescape((await c.get("/runs/ctx-1")).text)
    assert re.search(r"context \d+/300 tok; truncated: notes \(\d+ tok\)", page), page[-3000:]


async def test_an_agents_blocks_sit_between_system_and_task_every_turn(
    make_app: Callable[..., keel.App],
) -> None:
    model = _script(6)
    app = make_app(model)

    @app.tool
    async def lookup(n: int) -> dict[str, Any]:
        """Look up one order (a big record)."""
        return {**BIG, "n": n}

    @app.workflow
    async def sweep(ctx: keel.Context) -> str | None:
        plan = Block.fields("session", {"plan": "pro", "region": "eu"})
        res = await ctx.llm.agent(
            "Check every order.", tools=[lookup], system="Be brief.", blocks=[plan], budget=900
        )
        return res.content

    assert await (await app.start(sweep, {})).result(WAIT) == "checked 6 orders"
    for call in model.calls:
        sent = call["messages"]
        assert sent[0]["content"] == "Be brief."
        assert sent[1]["content"] == 'plan: "pro"\nregion: "eu"'
        assert sent[2]["content"] == "Check every order."
        assert COUNT(sent) + COUNT([], _tools(app)) <= 900
    assert len(model.calls[-1]["messages"]) < 3 + 2 * 6  # history was trimmed


async def test_structured_calls_take_blocks_and_a_budget(
    make_app: Callable[..., keel.App],
) -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        late: bool

    model = ScriptedModel(lambda messages: '{"late": true}')
    app = make_app(model)

    @app.workflow
    async def judge(ctx: keel.Context) -> bool:
        order = Block("order", json.dumps(BIG), kind="previous")
        return (await ctx.llm.structured(Verdict, "Is it late?", blocks=[order], budget=250)).late

    handle = await app.start(judge, {})
    assert await handle.result(WAIT) is True
    sent = model.calls[-1]["messages"]
    assert sent[-1]["content"] == "Is it late?" and "truncated" in sent[0]["content"]
    (step,) = [s for s in await app.steps(handle.id) if s.kind is StepKind.LLM]
    assert step.output["context"]["budget"] == 250
