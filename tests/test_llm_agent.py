"""`ctx.llm.agent`: a tool-calling loop where every model turn and every tool call is its
own journaled step; invalid tool calls go back to the model as errors (within a budget);
tools keep their own retry and fallback policies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, LLMResponse, Reply, ScriptedModel
from keel.types import RunStatus, StepStatus
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
NO_RETRY = keel.Retry(attempts=1)
ASK = "Where is order 42?"


@pytest.fixture
async def llm_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(llm: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


def tool_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] == "tool"]


def call(name: str, arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def agent_app(app: keel.App, executions: list[int], **agent_options: Any) -> Any:
    """An order-status agent with a `lookup` tool that fails once (a transient error)."""

    @app.tool(retry=keel.Retry(attempts=3, backoff=0.001))
    async def lookup(order_id: int) -> dict[str, Any]:
        """Look up an order's shipping status."""
        executions.append(order_id)
        if len(executions) == 1:
            raise ConnectionError("orders service hiccup")
        return {"order_id": order_id, "status": "shipped"}

    @app.workflow
    async def support(ctx: keel.Context, question: str) -> dict[str, Any]:
        res = await ctx.llm.agent(
            question, tools=[lookup], system="You are a support agent.", **agent_options
        )
        return {
            "content": res.content,
            "turns": res.turns,
            "invalid": res.invalid_calls,
            "calls": res.tool_calls,
            "roles": [m["role"] for m in res.messages],
        }

    return support


async def test_invalid_tool_calls_go_back_to_the_model_and_are_corrected(
    llm_app: Callable[..., keel.App],
) -> None:
    def fn(messages: list[dict[str, Any]]) -> Reply:
        results = tool_messages(messages)
        if not results:  # turn 1: four ways to get a tool call wrong
            return Reply(
                tool_calls=[
                    call("lookup", {"order_id": "forty-two"}),  # wrong type
                    call("refund_everything", {}),  # no such tool
                    call("lookup", "{order_id: 42"),  # not JSON
                    call("lookup", {"order_id": 42, "verbose": True}),  # unknown argument
                ]
            )
        if len(results) == 4:  # turn 2: corrected
            return Reply(tool_calls=[call("lookup", {"order_id": 42})])
        status = json.loads(results[-1]["content"])["status"]
        return Reply(content=f"Order 42 has {status}.")

    model = ScriptedModel(fn)
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    executions: list[int] = []
    support = agent_app(app, executions, invalid_call_budget=4)
    handle = await app.start(support, {"question": ASK})
    out = await handle.result(RESULT)

    assert out["content"] == "Order 42 has shipped."
    assert out["turns"] == 3 and out["invalid"] == 4
    assert [(c["turn"], c["tool"], c["ok"]) for c in out["calls"]] == [
        (1, "lookup", False),
        (1, "refund_everything", False),
        (1, "lookup", False),
        (1, "lookup", False),
        (2, "lookup", True),
    ]
    assert out["roles"] == ["system", "user", "assistant"] + ["tool"] * 4 + [
        "assistant",
        "tool",
        "assistant",
    ]
    assert len(model.calls) == 3

    # what the model was told about each bad call, in its next request
    errors = [m["content"] for m in tool_messages(model.calls[1]["messages"])]
    assert errors[0].startswith("error: invalid arguments for lookup: order_id:")
    assert "valid integer" in errors[0]
    assert "no tool named 'refund_everything'" in errors[1] and "available: lookup" in errors[1]
    assert "not valid JSON" in errors[2]
    assert "verbose" in errors[3] and "Extra inputs are not permitted" in errors[3]
    ids = [m["tool_call_id"] for m in tool_messages(model.calls[1]["messages"])]
    assistant = model.calls[1]["messages"][2]
    assert ids == [tc["id"] for tc in assistant["tool_calls"]]  # each error answers its call

    # the tools were offered with their signatures as JSON schema
    (schema,) = model.calls[0]["params"]["tools"]
    assert schema["function"]["name"] == "lookup"
    assert schema["function"]["description"] == "Look up an order's shipping status."
    assert schema["function"]["parameters"]["properties"]["order_id"]["type"] == "integer"

    # the invalid calls never ran; the valid one ran as a journaled step with its retry
    assert executions == [42, 42]
    steps = await app.steps(handle.id)
    assert [(s.kind.value, s.key) for s in steps] == [
        ("llm", "llm:agent#0"),
        ("llm", "llm:agent#1"),
        ("tool", "lookup#0"),
        ("llm", "llm:agent#2"),
    ]
    tool_step = steps[2]
    assert tool_step.status is StepStatus.OK and tool_step.attempts == 2
    assert tool_step.output == {"order_id": 42, "status": "shipped"}
    last = LLMResponse.model_validate(steps[3].output)
    assert last.request["messages"][-1]["content"] == json.dumps(tool_step.output)


async def test_the_invalid_call_budget_ends_the_loop(llm_app: Callable[..., keel.App]) -> None:
    model = ScriptedModel(lambda m: Reply(tool_calls=[call("lookup", {"order_id": "?"})]))
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    executions: list[int] = []
    support = agent_app(app, executions, invalid_call_budget=2)
    info = await (await app.start(support, {"question": ASK})).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "AgentTurnLimit"
    assert info.error.data == {"turns": 3, "invalid_calls": 3}
    assert "3 invalid tool calls (budget 2)" in info.error.message
    assert len(model.calls) == 3 and executions == []


async def test_max_turns_ends_a_loop_that_never_answers(
    llm_app: Callable[..., keel.App],
) -> None:
    model = ScriptedModel(lambda m: Reply(tool_calls=[call("lookup", {"order_id": 7})]))
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    executions: list[int] = []
    support = agent_app(app, executions, max_turns=3)
    info = await (await app.start(support, {"question": ASK})).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "AgentTurnLimit" and "within 3 turns" in info.error.message
    assert info.error.data == {"turns": 3, "invalid_calls": 0}
    assert len(model.calls) == 3
    assert executions == [7, 7, 7, 7]  # three calls, the first retried once


async def test_a_tool_that_fails_for_good_is_reported_to_the_model(
    llm_app: Callable[..., keel.App],
) -> None:
    def fn(messages: list[dict[str, Any]]) -> Reply:
        results = tool_messages(messages)
        if not results:
            return Reply(tool_calls=[call("charge", {"cents": 500}), call("note", {"text": "hi"})])
        return Reply(content=" | ".join(m["content"] for m in results))

    model = ScriptedModel(fn)
    app = llm_app(Gateway({"m": model}, retry=NO_RETRY))
    charges: list[int] = []

    @app.tool(retry=keel.Retry(attempts=2, backoff=0.001))
    async def charge(cents: int) -> str:
        charges.append(cents)
        raise ConnectionError("payments are down")

    @app.tool(fallback=keel.Fallback.degrade(default="(not noted)"))
    async def note(text: str) -> str:
        raise ValueError("notes are read-only")

    @app.workflow
    async def wf(ctx: keel.Context) -> str | None:
        return (await ctx.llm.agent("Charge me", tools=[charge, note])).content

    handle = await app.start(wf)
    out = await handle.result(RESULT)
    failed, degraded = out.split(" | ")
    assert failed.startswith("error: tool charge failed:") and "payments are down" in failed
    assert degraded == json.dumps("(not noted)")  # the tool's own fallback applied
    assert charges == [500, 500]  # the tool's retry policy, not the agent's
    steps = {s.key: s for s in await app.steps(handle.id)}
    assert steps["charge#0"].status is StepStatus.ERROR and steps["charge#0"].attempts == 2
    assert steps["note#0"].fallback == "degrade"


async def test_agent_rejects_things_that_are_not_tools(llm_app: Callable[..., keel.App]) -> None:
    app = llm_app(ScriptedModel(lambda m: "done"))

    async def plain(x: int) -> int:
        return x

    @app.workflow
    async def wf(ctx: keel.Context) -> str | None:
        return (await ctx.llm.agent("hi", tools=[plain])).content  # type: ignore[list-item]

    info = await (await app.start(wf)).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "ConfigError" and "@app.tool" in info.error.message
