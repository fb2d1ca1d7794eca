"""One App of workflows and tools that both executors must run alike.

Every scenario is a workflow here plus its input, the signals sent to it, and the
outcome expected; tests/test_temporal_behaviour.py runs each on Keel's engine and on
Temporal and compares the normalised outcome, so a difference is a failing test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

import keel

_attempts: dict[str, int] = {}  # token -> attempts made so far (tools run in this process)


class Greeting(BaseModel):
    text: str
    length: int


async def greet(name: str, punctuation: str = "!") -> Greeting:
    text = f"hello {name}{punctuation}"
    return Greeting(text=text, length=len(text))


def shout(greeting: Greeting) -> str:  # a sync tool taking a Pydantic model
    return greeting.text.upper()


async def flaky(token: str, failures: int) -> int:
    n = _attempts[token] = _attempts.get(token, 0) + 1
    if n <= failures:
        raise keel.RetryableError(f"transient failure {n}")
    return n


async def broken(reason: str) -> str:
    raise ValueError(f"broken: {reason}")


async def lookup(key: str) -> str:
    raise ValueError(f"no {key}")


async def essential(key: str) -> str:
    raise ValueError(f"cannot do without {key}")


async def tools_sleep_signal(ctx: keel.Context, name: str) -> dict[str, Any]:
    greeting = await ctx.call(greet, name)
    loud = await ctx.call(shout, greeting)
    await ctx.sleep(0.05)
    go = await ctx.wait_for("go", timeout=600)
    return {"greeting": greeting.model_dump(), "loud": loud, "go": go}


async def retries(ctx: keel.Context, token: str) -> int:
    return int(await ctx.call(flaky, token, 2))


async def retries_exhausted(ctx: keel.Context, token: str) -> str:
    try:
        await ctx.call(flaky, token, 5)
    except keel.StepError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    return "no error"


async def caught_failure(ctx: keel.Context) -> str:
    try:
        await ctx.call(broken, "disk")
    except keel.StepError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    return "no error"


async def uncaught_failure(ctx: keel.Context) -> str:
    return str(await ctx.call(broken, "net"))


async def degraded(ctx: keel.Context) -> dict[str, Any]:
    value = await ctx.call(lookup, "colour")
    return {"value": value, "degraded": ctx.degraded}


async def hard_stop(ctx: keel.Context) -> str:
    try:
        await ctx.call(essential, "power")
    except keel.StepError:
        return "caught"  # Fallback.fail: the run fails anyway
    return "no error"


async def signal_timeout(ctx: keel.Context) -> str:
    try:
        await ctx.wait_for("never", timeout=0.2)
    except keel.SignalTimeout as exc:
        return f"timeout: {exc.message}"
    return "no timeout"


async def values(ctx: keel.Context) -> dict[str, Any]:
    first, again = ctx.uuid(), ctx.uuid()
    r = ctx.random()
    return {
        "uuid": len(first) == 36 and first != again,
        "random": 0.0 <= r < 1.0,
        "now": ctx.now().year >= 2024,
    }


async def bad_output(ctx: keel.Context) -> Any:
    return {"handle": object()}  # not JSON: the run fails, saying so


WORKFLOWS = [
    tools_sleep_signal,
    retries,
    retries_exhausted,
    caught_failure,
    uncaught_failure,
    degraded,
    hard_stop,
    signal_timeout,
    values,
    bad_output,
]


def build(store: str, **options: Any) -> keel.App:
    """An App with every scenario's tools and workflows registered, on `store`."""
    app = keel.App(store, **options)
    app.tool(greet)
    app.tool(shout)
    app.tool(retry=keel.Retry(attempts=3, backoff=0.01, jitter=False))(flaky)
    app.tool(broken)
    app.tool(fallback=keel.Fallback.degrade(default="unknown"))(lookup)
    app.tool(fallback=keel.Fallback.fail())(essential)
    for wf in WORKFLOWS:
        app.workflow(wf)
    return app


@dataclass(frozen=True)
class Scenario:
    workflow: str
    input: dict[str, Any]
    expected: tuple[Any, ...]
    signals: list[tuple[str, Any]] = field(default_factory=list)


SCENARIOS: dict[str, Scenario] = {
    s.workflow: s
    for s in [
        Scenario(
            "tools_sleep_signal",
            {"name": "ada"},
            (
                "ok",
                {
                    "greeting": {"text": "hello ada!", "length": 10},
                    "loud": "HELLO ADA!",
                    "go": {"by": "bob"},
                },
            ),
            signals=[("go", {"by": "bob"})],
        ),
        Scenario("retries", {"token": "?"}, ("ok", 3)),
        Scenario(
            "retries_exhausted",
            {"token": "?"},
            ("ok", "RetryableError: transient failure 3"),
        ),
        Scenario(
            "caught_failure",
            {},
            ("ok", "StepError: step 'broken#0' failed: ValueError: broken: disk"),
        ),
        Scenario("uncaught_failure", {}, ("failed", "ValueError", "broken#0")),
        Scenario("degraded", {}, ("ok", {"value": "unknown", "degraded": ["lookup#0"]})),
        Scenario("hard_stop", {}, ("failed", "ValueError", "essential#0")),
        Scenario("signal_timeout", {}, ("ok", "timeout: no 'never' signal arrived within 0.2s")),
        Scenario("values", {}, ("ok", {"uuid": True, "random": True, "now": True})),
        Scenario("bad_output", {}, ("failed", "SerializationError", None)),
    ]
}
