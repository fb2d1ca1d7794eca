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


async def draft(topic: str) -> str:
    step = keel.current_step()
    assert step is not None
    if not step.feedback:
        return "tbd"
    return f"{topic} (attempt {step.attempt}, after: {step.feedback[0]})"


def long_enough(text: str) -> str | None:
    return None if len(text) > 3 else f"{text!r} is too short"


async def slow_index(token: str) -> str:
    n = _attempts[token] = _attempts.get(token, 0) + 1
    if n == 1:
        raise keel.RetryableError("index still building", retry_after=0.2)
    return f"ready after {n} attempts"


async def overloaded(token: str) -> str:
    raise keel.RetryableError("overloaded")


async def busy(token: str) -> str:
    n = _attempts[token] = _attempts.get(token, 0) + 1
    raise keel.RetryableError(f"busy ({n})")


async def fragile(n: int) -> str:
    raise ValueError(f"down ({n})")


async def local_flaky(token: str, failures: int) -> int:
    return await flaky(token, failures)


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
    await ctx.sleep(0)  # nothing to wait for, on either executor
    go = await ctx.wait_for("go", timeout=600)
    return {"greeting": greeting.model_dump(), "loud": loud, "go": go}


async def retries(ctx: keel.Context, token: str) -> int:
    return int(await ctx.call(flaky, token, 2))


async def local_retries(ctx: keel.Context, token: str) -> list[Any]:
    """A local activity on Temporal (`local=True`); the same outcome everywhere."""
    done = int(await ctx.call(local_flaky, token, 1))
    try:
        await ctx.call(local_flaky, token + "!", 9)
    except keel.StepError as exc:
        return [done, exc.message]
    return [done]


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


async def feedback(ctx: keel.Context) -> str:
    return str(await ctx.call(draft, "tides"))


async def idempotency(ctx: keel.Context) -> str:
    key = await ctx.call(step_key)
    return "ok" if key == f"{ctx.run_id}:step_key#0" else f"wrong key {key}"


async def step_key() -> str:
    step = keel.current_step()
    return step.idempotency_key if step is not None else "none"


async def server_asks_to_wait(ctx: keel.Context, token: str) -> str:
    return str(await ctx.call(slow_index, token))


async def past_deadline(ctx: keel.Context, token: str) -> str:
    try:
        await ctx.call(overloaded, token)
    except keel.StepError as exc:
        return exc.message
    return "no error"


async def deadline_counts_from_the_first_attempt(ctx: keel.Context, token: str) -> str:
    try:
        await ctx.call(busy, token)
    except keel.StepError as exc:
        return exc.message
    return "no error"


async def breaker_opens(ctx: keel.Context) -> list[str]:
    seen = []
    for n in range(3):  # two failures open it: the third call is never attempted
        try:
            await ctx.call(fragile, n)
        except keel.StepError as exc:
            seen.append(f"{type(exc).__name__}: {exc.message[:60]}")
    return seen


async def identity(ctx: keel.Context) -> dict[str, Any]:
    own = ctx.session_id == ctx.run_id
    return {"tenant": ctx.tenant, "session": "own" if own else ctx.session_id}


TOOLS: dict[str, Any] = {}  # tools ctx.map takes as objects: set by build()


class Tally(BaseModel):
    seen: list[str] = []
    total: int = 0


async def square(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


async def fan_out(ctx: keel.Context, numbers: list[int]) -> dict[str, Any]:
    squares = await ctx.map(TOOLS["square"], numbers, concurrency=2)

    async def describe(child: keel.Context, n: int) -> str:
        child.state.seen.append(f"item {n}")  # the item's own copy of the state
        return str(await child.call(shout, await child.call(greet, str(n), "?")))

    texts = await ctx.map(describe, numbers)
    both = await ctx.gather(ctx.call(square, 7), ctx.call(shout, Greeting(text="hi", length=2)))
    ctx.state.total = sum(v for v in squares.values if v is not None)
    return {
        "squares": squares.values,
        "texts": [t for t in texts.values],
        "both": both.values,
        "state": ctx.state.model_dump(),
    }


async def partial(ctx: keel.Context, numbers: list[int]) -> dict[str, Any]:
    some = await ctx.map(TOOLS["square"], numbers, require=keel.AtLeast(2))
    try:

        async def each(child: keel.Context, n: int) -> int:
            return int(await child.call(square, n))

        await ctx.map(each, numbers)
    except keel.MapFailed as exc:
        return {
            "values": some.values,
            "failed": [(f.index, f.error.type, f.error.message) for f in some.failed],
            "error": exc.message,
        }
    return {"values": some.values}


WORKFLOWS = [
    tools_sleep_signal,
    retries,
    retries_exhausted,
    local_retries,
    caught_failure,
    uncaught_failure,
    degraded,
    hard_stop,
    signal_timeout,
    values,
    bad_output,
    feedback,
    idempotency,
    partial,
    server_asks_to_wait,
    past_deadline,
    deadline_counts_from_the_first_attempt,
    breaker_opens,
    identity,
]


def build(store: str, **options: Any) -> keel.App:
    """An App with every scenario's tools and workflows registered, on `store`."""
    app = keel.App(store, **options)
    app.tool(greet)
    app.tool(shout)
    app.tool(retry=keel.Retry(attempts=3, backoff=0.01, jitter=False))(flaky)
    app.tool(broken)
    app.tool(retry=keel.Retry(attempts=3, backoff=0.01, jitter=False), local=True)(local_flaky)
    app.tool(retry=keel.Retry(attempts=2, backoff=0.01), validate=long_enough)(draft)
    app.tool(step_key)
    app.tool(breaker=keel.CircuitBreaker(failures=2, reset_after=600))(fragile)
    app.tool(retry=keel.Retry(attempts=3, backoff=0.01, jitter=False))(slow_index)
    app.tool(retry=keel.Retry(attempts=5, backoff=5, jitter=False, deadline=1))(overloaded)
    # the second attempt comes 2 s after the first, so a third would pass the deadline of
    # 3 s counted from the first; a first attempt up to 1 s late (a loaded machine) is fine
    slow_retry = keel.Retry(attempts=9, backoff=2, multiplier=1, jitter=False, deadline=3)
    app.tool(retry=slow_retry)(busy)
    app.tool(fallback=keel.Fallback.degrade(default="unknown"))(lookup)
    app.tool(fallback=keel.Fallback.fail())(essential)
    TOOLS["square"] = app.tool(square)
    for wf in WORKFLOWS:
        app.workflow(wf)
    app.workflow(state=Tally)(fan_out)
    return app


@dataclass(frozen=True)
class Scenario:
    workflow: str
    input: dict[str, Any]
    expected: tuple[Any, ...]
    signals: list[tuple[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # start(tenant=, session=)


SCENARIOS: dict[str, Scenario] = {
    s.workflow + ("+" + "+".join(s.options) if s.options else ""): s
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
        Scenario("local_retries", {"token": "?"}, ("ok", [2, "transient failure 3"])),
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
        Scenario("feedback", {}, ("ok", "tides (attempt 2, after: 'tbd' is too short)")),
        Scenario("idempotency", {}, ("ok", "ok")),
        Scenario(
            "breaker_opens",
            {},
            (
                "ok",
                [
                    "StepError: step 'fragile#0' failed: ValueError: down (0)",
                    "StepError: step 'fragile#1' failed: ValueError: down (1)",
                    "CircuitOpen: circuit breaker for tool 'fragile' is open after repeated fa",
                ],
            ),
        ),
        Scenario("identity", {}, ("ok", {"tenant": None, "session": "own"})),
        Scenario(
            "identity",
            {},
            ("ok", {"tenant": "acme", "session": "chat-7"}),
            options={"tenant": "acme", "session": "chat-7"},
        ),
        Scenario(
            "deadline_counts_from_the_first_attempt",
            {"token": "?"},
            (
                "ok",
                "busy (2) (gave up after 2 attempt(s): the next one (2.0s away) would pass "
                "the retry deadline of 3s from the first attempt)",
            ),
        ),
        Scenario("server_asks_to_wait", {"token": "?"}, ("ok", "ready after 2 attempts")),
        Scenario(
            "past_deadline",
            {"token": "?"},
            (
                "ok",
                "overloaded (gave up after 1 attempt(s): the next one (5.0s away) would pass "
                "the retry deadline of 1s from the first attempt)",
            ),
        ),
        Scenario(
            "fan_out",
            {"numbers": [1, 2, 3]},
            (
                "ok",
                {
                    "squares": [1, 4, 9],
                    "texts": ["HELLO 1?", "HELLO 2?", "HELLO 3?"],
                    "both": [49, "HI"],
                    "state": {"seen": [], "total": 14},
                },
            ),
        ),
        Scenario(
            "partial",
            {"numbers": [1, -2, 3]},
            (
                "ok",
                {
                    "values": [1, None, 9],
                    "failed": [[1, "ValueError", "negative: -2"]],
                    "error": "map:each#0: 1 of 3 items failed; required all 3 items "
                    "(first failure: item 1: ValueError: negative: -2)",
                },
            ),
        ),
    ]
}
