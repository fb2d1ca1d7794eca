"""Workflows using the features an App plugs in (model calls, long-term memory, session
state, a user's own `ctx.operation`) that both executors must run alike.

tests/test_temporal_features.py runs each on Keel's engine and on Temporal and compares
the outcomes, then checks what Keel's store recorded of the Temporal run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import keel
from keel.engine.recovery import StepPolicy
from tests.behaviour.scenarios import Scenario
from tests.memory_embedders import HashedWords

oracle_calls: dict[str, int] = {}  # question -> times the oracle's effect ran
model_tries: dict[str, int] = {}  # a "flaky" prompt -> times the model was asked it


class Ticket(BaseModel):
    queue: str
    urgent: bool


class _Unavailable(Exception):
    """What a provider SDK raises for a 503 (transient: Keel's Retry tries again)."""

    def __init__(self) -> None:
        super().__init__("provider said 503")
        self.status_code = 503


def _slow_down() -> Exception:
    """What LiteLLM raises for a 429 whose response asks to retry in 0.05 s."""
    import httpx
    from litellm import RateLimitError

    asked = httpx.Response(
        429, headers={"retry-after": "0.05"}, request=httpx.Request("POST", "http://model")
    )
    return RateLimitError("slow down", llm_provider="keel-scripted", model="m", response=asked)


def _reply(messages: list[dict[str, Any]]) -> str:
    text = str(messages[-1]["content"])
    if text.startswith("slow"):  # rate limited on the first ask of each prompt
        model_tries[text] = model_tries.get(text, 0) + 1
        if model_tries[text] == 1:
            raise _slow_down()
        return f"answered on ask {model_tries[text]}"
    if text.startswith("flaky"):  # down for the first two asks of each prompt
        model_tries[text] = model_tries.get(text, 0) + 1
        if model_tries[text] <= 2:
            raise _Unavailable()
        return f"up after {model_tries[text]} asks"
    if "JSON" in text or "schema" in text.lower():
        return '{"queue": "billing", "urgent": true}'
    return "billing" if "refund" in text else "general"


async def classify(ctx: keel.Context, text: str) -> dict[str, Any]:
    label = await ctx.llm.text(f"Classify: {text}")
    ticket = await ctx.llm.structured(Ticket, f"Route this ticket as JSON: {text}")
    return {"label": label, "ticket": ticket.model_dump()}


async def remember(ctx: keel.Context, user: str) -> dict[str, Any]:
    first = await ctx.memory.add(f"{user} prefers green tea", namespace=user)
    await ctx.memory.add(f"{user} lives in Lisbon", namespace=user)
    hits = await ctx.memory.search("which tea does the user prefer", namespace=user, k=1)
    return {"top": [h.text for h in hits], "same_id": hits[0].id == first}


async def counter(ctx: keel.Context) -> dict[str, Any]:
    before = await ctx.session.get("n")
    won = await ctx.session.compare_and_set("n", before, (before or 0) + 1)
    await ctx.session.set("last", ctx.run_id[:0] + "seen")
    return {"before": before, "won": won, "after": await ctx.session.get("n")}


async def ask_oracle(ctx: keel.Context, question: str) -> str:
    async def effect() -> str:
        oracle_calls[question] = oracle_calls.get(question, 0) + 1
        step = keel.current_step()
        assert step is not None
        return f"{question}: 42 (step {step.key})"

    out: str = await ctx.operation("oracle", question).run(effect, str)
    again: str = await ctx.operation("oracle", question).run(effect, str)
    return f"{out} | {again}"


async def forget_fact(ctx: keel.Context, user: str) -> dict[str, Any]:
    """Forgotten for good (the search finds nothing, vector index included); forgetting
    it again is this run's mistake: `keel.MemoryNotFound`."""
    memory_id = await ctx.memory.add(f"{user} likes chess", namespace=user)
    await ctx.memory.forget(memory_id)
    hits = await ctx.memory.search(f"{user} likes chess", namespace=user)
    try:
        await ctx.memory.forget(memory_id)
    except keel.MemoryNotFound as exc:
        return {"hits": len(hits), "again": type(exc).__name__}
    return {"hits": len(hits), "again": "forgotten twice"}


_BUDGET = StepPolicy(retry=keel.Retry(attempts=3, backoff=0, budget=2))  # no timers: cheap


async def budgeted_ops(ctx: keel.Context, question: str) -> list[str]:
    """Two operations of one's own share a retry budget of two: the first spends it
    (it succeeds on its third attempt), the second is refused its first retry."""

    async def flaky() -> str:
        step = keel.current_step()
        assert step is not None
        if step.attempt < 3:
            raise ConnectionError(f"down on attempt {step.attempt}")
        return f"{question} on attempt {step.attempt}"

    first: str = await ctx.operation("flaky", question).run(flaky, str, _BUDGET)
    try:
        await ctx.operation("flaky", question).run(flaky, str, _BUDGET)
    except keel.BudgetExceeded as exc:
        return [first, exc.message]
    return [first, "not refused"]


async def budgeted_llm(ctx: keel.Context, question: str) -> list[Any]:
    """Model calls share the Gateway's retry budget of two (counted under their step
    name, `llm:flaky`): the first spends it, the second is refused its first retry, the
    third's fallback answers for it."""
    first = await ctx.llm.text(f"flaky first {question}", name="flaky")
    stale = keel.Fallback.degrade("stale")
    third = await ctx.llm.text(f"flaky third {question}", name="flaky", fallback=stale)
    try:
        await ctx.llm.text(f"flaky second {question}", name="flaky")
    except keel.BudgetExceeded as exc:  # its last error is LiteLLM's wording: not compared
        return [first, third, exc.message.split(" (last error")[0], exc.data["budget"]]
    return [first, third, "not refused"]


async def rate_limited(ctx: keel.Context, question: str) -> str:
    """A model call the provider rate-limits once, asking to wait (Retry-After)."""
    return await ctx.llm.text(f"slow {question}", name="slow")


# Every model call retries under a run-wide budget; no backoff, so no timers: cheap.
_GATEWAY_RETRY = keel.Retry(attempts=3, backoff=0, budget=2)


def build(store: str, **options: Any) -> keel.App:
    """An App with the feature scenarios' workflows, a scripted model and a test embedder."""
    model = keel.llm.ScriptedModel(_reply, price_as="gpt-4o-mini")
    gateway = keel.llm.Gateway({"m": model}, default="m", retry=_GATEWAY_RETRY)
    app = keel.App(store, llm=gateway, embedder=HashedWords(), **options)
    workflows = (classify, remember, counter, ask_oracle, forget_fact, budgeted_ops)
    workflows += (budgeted_llm, rate_limited)
    for wf in workflows:
        app.workflow(wf)
    return app


FEATURE_SCENARIOS: dict[str, Scenario] = {
    s.workflow: s
    for s in [
        Scenario(
            "classify",
            {"text": "I want a refund"},
            ("ok", {"label": "billing", "ticket": {"queue": "billing", "urgent": True}}),
        ),
        Scenario(
            "remember",
            {"user": "?"},
            ("ok", {"top": ["? prefers green tea"], "same_id": True}),
        ),
        Scenario("counter", {}, ("ok", {"before": None, "won": True, "after": 1})),
        Scenario(
            "ask_oracle",
            {"question": "?"},
            ("ok", "?: 42 (step oracle#0) | ?: 42 (step oracle#1)"),
        ),
        Scenario("forget_fact", {"user": "?"}, ("ok", {"hits": 0, "again": "MemoryNotFound"})),
        Scenario(
            "budgeted_ops",
            {"question": "?"},
            (
                "ok",
                [
                    "? on attempt 3",
                    "tool 'flaky' used its retry budget of 2 for this run "
                    "(last error: ConnectionError: down on attempt 1)",
                ],
            ),
        ),
        Scenario(
            "budgeted_llm",
            {"question": "?"},
            (
                "ok",
                [
                    "up after 3 asks",
                    "stale",
                    "tool 'llm:flaky' used its retry budget of 2 for this run",
                    2,
                ],
            ),
        ),
    ]
}
