"""Tool and phase features both executors must run alike: `keep=`, irreversible tools,
`Retry(budget=)`, validation feedback for a `local=True` tool, `ctx.phase`.

tests/test_temporal_tools.py runs each on Keel's engine and on Temporal and compares
the outcomes, then checks what Keel's store recorded of the Temporal run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import keel
from tests.behaviour.scenarios import Scenario

_attempts: dict[str, int] = {}  # token -> attempts made so far (tools run in this process)
effects: dict[str, int] = {}  # token -> times an irreversible tool's effect ran


class Order(BaseModel):
    status: str
    total: int


async def fetch_order(order_id: str) -> dict[str, Any]:
    """A large record where two fields matter."""
    return {"id": order_id, "status": "shipped", "total": 250, "notes": "x" * 300, "lines": [1]}


async def kept_order(ctx: keel.Context, order_id: str) -> dict[str, Any]:
    order = await ctx.call(fetch_order, order_id)
    return {"type": type(order).__name__, **order.model_dump()}


async def always_down(token: str) -> int:
    _attempts[token] = _attempts.get(token, 0) + 1
    raise keel.RetryableError("service unavailable")


async def budgeted(ctx: keel.Context, token: str) -> list[Any]:
    """Two calls share a budget of two retries: the first uses both, the second none."""
    out: list[Any] = []
    for n in range(2):
        tag = f"{token}-{n}"
        try:
            await ctx.call(always_down, tag)
        except keel.StepError as exc:
            out.append([type(exc).__name__, _attempts.get(tag, 0)])
    return out


async def budgeted_map(ctx: keel.Context, token: str) -> list[Any]:
    """Three map items share the budget of two retries, whatever order they run in."""
    tags = [f"{token}-{n}" for n in range(3)]

    async def item(child: keel.Context, tag: str) -> int:
        return int(await child.call(always_down, tag))

    res = await ctx.map(item, tags, require=keel.BestEffort())
    kinds = sorted(f.error.type for f in res.failed)
    return [sum(_attempts.get(t, 0) for t in tags), kinds]


async def local_draft(topic: str) -> str:
    step = keel.current_step()
    assert step is not None
    if not step.feedback:
        return "tbd"
    return f"{topic} (attempt {step.attempt}, after: {step.feedback[0]})"


def long_enough(text: str) -> str | None:
    return None if len(text) > 5 else f"{text!r} is too short"


async def local_feedback(ctx: keel.Context) -> str:
    return str(await ctx.call(local_draft, "tides"))


async def transfer(token: str, cents: int) -> str:
    effects[token] = effects.get(token, 0) + 1
    n = _attempts[token] = _attempts.get(token, 0) + 1
    if n == 1:
        raise keel.RetryableError("bank busy")  # failed before moving anything
    step = keel.current_step()
    assert step is not None
    return f"moved {cents} ({step.idempotency_key.split(':', 1)[1]})"


async def pays(ctx: keel.Context, token: str) -> str:
    return str(await ctx.call(transfer, token, 500))


async def wires(ctx: keel.Context, token: str) -> str:
    """A user's own irreversible operation (an intent first, as for a tool)."""
    from keel.engine.recovery import StepPolicy

    async def effect() -> str:
        effects[token] = effects.get(token, 0) + 1
        return f"wired {effects[token]}"

    policy = StepPolicy(irreversible=True)
    out: str = await ctx.operation("wire", token).run(effect, str, policy)
    return out


class Draft(BaseModel):
    text: str = ""
    tries: int = 0


async def write(topic: str) -> str:
    step = keel.current_step()
    assert step is not None
    return topic if "/0/" in step.key else f"{topic}: a full paragraph"  # better the 2nd time


def is_long(state: Draft) -> str | None:
    return None if len(state.text) > 12 else f"draft {state.text!r} is too short"


async def phased(ctx: keel.Context, topic: str) -> dict[str, Any]:
    async with ctx.phase("plan"):
        ctx.state.tries += 1
    async for attempt in ctx.phase("draft", check=is_long, retries=1):
        async with attempt:
            ctx.state.tries += 1
            ctx.state.text = await ctx.call(write, topic)
    return {"text": ctx.state.text, "tries": ctx.state.tries}


async def phase_fails(ctx: keel.Context, topic: str) -> str:
    async for attempt in ctx.phase("draft", check=is_long, retries=1):
        async with attempt:
            ctx.state.text = topic
    return "unreachable"


def build(store: str, **options: Any) -> keel.App:
    """An App with the tool scenarios' workflows."""
    app = keel.App(store, **options)
    app.tool(keep=Order)(fetch_order)
    app.tool(retry=keel.Retry(attempts=5, backoff=0.01, budget=2))(always_down)
    app.tool(retry=keel.Retry(attempts=2, backoff=0.01), validate=long_enough, local=True)(
        local_draft
    )
    app.tool(irreversible=True, approval=False, retry=keel.Retry(attempts=2, backoff=0.01))(
        transfer
    )
    app.tool(write)
    for wf in (kept_order, budgeted, budgeted_map, local_feedback, pays, wires):
        app.workflow(wf)
    app.workflow(state=Draft)(phased)
    app.workflow(state=Draft)(phase_fails)
    return app


TOOL_SCENARIOS: dict[str, Scenario] = {
    s.workflow: s
    for s in [
        Scenario(
            "kept_order",
            {"order_id": "o-1"},
            ("ok", {"type": "Order", "status": "shipped", "total": 250}),
        ),
        Scenario(
            "budgeted", {"token": "?"}, ("ok", [["BudgetExceeded", 3], ["BudgetExceeded", 1]])
        ),
        Scenario("budgeted_map", {"token": "?"}, ("ok", [5, ["BudgetExceeded"] * 3])),
        Scenario("local_feedback", {}, ("ok", "tides (attempt 2, after: 'tbd' is too short)")),
        Scenario("pays", {"token": "?"}, ("ok", "moved 500 (transfer#0)")),
        Scenario("wires", {"token": "?"}, ("ok", "wired 1")),
        Scenario(
            "phased",
            {"topic": "tides"},
            ("ok", {"text": "tides: a full paragraph", "tries": 2}),
        ),
        Scenario(
            "phase_fails", {"topic": "short"}, ("failed", "CheckpointFailed", "phase:draft#0")
        ),
    ]
}
