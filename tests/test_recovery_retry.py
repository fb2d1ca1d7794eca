"""Retries: the backoff schedule, classification, timeouts, deadlines, budgets and breakers.

Tools come from the fault-injection harness (tests/faults.py). No test asserts how
fast anything happened: schedules are checked through `Retry.delay()` directly, or
as lower bounds on recorded attempt times ("not before Retry-After").
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import keel
from keel.engine.hooks import Hooks, StepEvent
from keel.engine.runtime import Settings
from keel.policy.breaker import BreakerState
from keel.policy.retry import is_transient, retry_after_of, status_of
from keel.types import RunStatus, StepStatus
from tests.faults import Always, Calls, Faults, HTTPStatusError, Schedule, Seeded
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
FAST = keel.Retry(attempts=4, backoff=0.001, jitter=False)
# Clock granularity between the recorded wake time and the next attempt's timestamp.
EPS = 0.005


def _tool_steps(steps: list[keel.StepRecord], name: str) -> list[keel.StepRecord]:
    return [s for s in steps if s.kind.value == "tool" and s.name == name]


class FakeClock:
    """A clock the workflow advances by hand, installed as a tool's breaker clock in this
    process's runtime: breaker tests then depend on no real time at all."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def install(self, app: keel.App, tool: str, config: keel.CircuitBreaker) -> FakeClock:
        app.runtime.breakers[tool] = BreakerState(config, clock=self)
        return self


class Retrying(Hooks):
    """Records every `step_retrying` event: (step key, failed attempt, wake_at)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, float]] = []

    def step_retrying(self, ev: StepEvent, attempt: int, wake_at: float) -> None:
        self.events.append((ev.key, attempt, wake_at))


# -- the schedule: Retry.delay() ------------------------------------------------------


def test_delay_without_jitter_is_exponential_and_capped() -> None:
    r = keel.Retry(attempts=8, backoff=0.5, multiplier=2, max_backoff=3, jitter=False)
    assert [r.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    r3 = keel.Retry(backoff=1, multiplier=3, max_backoff=100, jitter=False)
    assert [r3.delay(n) for n in (1, 2, 3, 4)] == [1, 3, 9, 27]
    flat = keel.Retry(backoff=0.25, multiplier=1, jitter=False)
    assert {flat.delay(n) for n in range(1, 10)} == {0.25}


def test_delay_of_a_very_late_attempt_is_capped_not_an_overflow() -> None:
    # "retry for a day, bounded by the deadline": attempt 2000 must not overflow
    r = keel.Retry(attempts=100_000, backoff=0.5, max_backoff=5, jitter=False, deadline=86400)
    assert r.delay(2000) == 5
    assert 0 <= keel.Retry(attempts=100_000, max_backoff=5, multiplier=2, seed=1).delay(5000) <= 5


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    r = keel.Retry(attempts=10, backoff=0.5, multiplier=2, max_backoff=5, seed=11)
    for n in range(1, 9):
        ceiling = min(5.0, 0.5 * 2 ** (n - 1))
        draws = [r.delay(n, key=f"step#{i}") for i in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws), (n, ceiling, max(draws))
        # full jitter spreads over the whole interval, not just near the ceiling
        assert min(draws) < 0.25 * ceiling and max(draws) > 0.75 * ceiling, (n, draws[:5])
    unseeded = keel.Retry(backoff=0.2, max_backoff=1)
    for n in range(1, 6):
        assert all(0.0 <= unseeded.delay(n) <= min(1.0, 0.2 * 2 ** (n - 1)) for _ in range(50))


def test_seeded_jitter_is_reproducible() -> None:
    a = keel.Retry(backoff=1, max_backoff=60, seed=42)
    b = keel.Retry(backoff=1, max_backoff=60, seed=42)
    sched_a = [a.delay(n, "tool#0") for n in range(1, 7)]
    assert sched_a == [b.delay(n, "tool#0") for n in range(1, 7)]
    assert sched_a == [a.delay(n, "tool#0") for n in range(1, 7)]  # no hidden state
    # the seed, the step key and the attempt all feed the draw
    assert sched_a != [
        keel.Retry(backoff=1, max_backoff=60, seed=43).delay(n, "tool#0") for n in range(1, 7)
    ]
    assert sched_a != [a.delay(n, "tool#1") for n in range(1, 7)]
    assert len(set(sched_a)) == len(sched_a)


def test_retry_after_seconds_wins_when_longer_than_the_backoff() -> None:
    jittered = keel.Retry(backoff=0.1, max_backoff=0.1, seed=1)
    exc = HTTPStatusError(429, retry_after="7")
    assert retry_after_of(exc) == 7.0
    assert all(jittered.delay(n, "k", exc) >= 7.0 for n in range(1, 5))
    # a longer backoff is not shortened by a short Retry-After
    slow = keel.Retry(backoff=20, max_backoff=20, jitter=False)
    assert slow.delay(1, "k", HTTPStatusError(429, retry_after="2")) == 20
    # fractional seconds, a `.retry_after` attribute and `response.headers` all count
    assert retry_after_of(HTTPStatusError(503, retry_after="1.5")) == 1.5
    assert (
        keel.Retry(backoff=0, jitter=False).delay(1, "k", keel.RetryableError("x", retry_after=4))
        == 4
    )

    class Response:
        status_code = 503
        headers = {"retry-after": "3"}

    class ClientError(Exception):
        response = Response()

    assert status_of(ClientError()) == 503 and retry_after_of(ClientError()) == 3.0
    # garbage or a missing header leaves the backoff alone
    assert retry_after_of(HTTPStatusError(429, retry_after="soon")) is None
    assert retry_after_of(HTTPStatusError(429)) is None
    assert keel.Retry(backoff=1, jitter=False).delay(1, "k", HTTPStatusError(429, "soon")) == 1


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_of(HTTPStatusError(503, retry_after=date), now=now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_of(HTTPStatusError(503, retry_after=past), now=now) == 0.0
    # through delay(), against the real clock (HTTP dates have whole-second resolution)
    future = email.utils.formatdate(time.time() + 10, usegmt=True)
    d = keel.Retry(backoff=0.01, jitter=False).delay(1, "k", HTTPStatusError(429, future))
    assert 8.5 <= d <= 10.5


def test_retry_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="attempts"):
        keel.Retry(attempts=0)
    with pytest.raises(ValueError, match="budget"):
        keel.Retry(budget=-1)
    with pytest.raises(ValueError):
        keel.Retry(backoff=-1)
    with pytest.raises(ValueError):
        keel.Retry(multiplier=0.5)


# -- classification ---------------------------------------------------------------------


class ReadTimeout(Exception):
    """Named like httpx's: matched by name, no httpx needed."""


class Shape(BaseModel):
    n: int


def _pydantic_error() -> ValidationError:
    try:
        TypeAdapter(Shape).validate_python({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (TimeoutError("slow"), True),
        (asyncio.TimeoutError(), True),  # noqa: UP041 - the alias clients raise
        (ConnectionError("down"), True),
        (ConnectionResetError("reset"), True),
        (ReadTimeout("read"), True),
        (keel.RetryableError("later"), True),
        (HTTPStatusError(408), True),
        (HTTPStatusError(429), True),
        (HTTPStatusError(500), True),
        (HTTPStatusError(502), True),
        (HTTPStatusError(503), True),
        (HTTPStatusError(504), True),
        (HTTPStatusError(400), False),
        (HTTPStatusError(401), False),
        (HTTPStatusError(403), False),
        (HTTPStatusError(404), False),
        (HTTPStatusError(422), False),
        (_pydantic_error(), False),
        (ValueError("bad"), False),
        (KeyError("k"), False),
        (RuntimeError("bug"), False),
    ],
    ids=lambda v: (
        v if isinstance(v, bool) else f"{type(v).__name__}{getattr(v, 'status_code', '')}"
    ),
)
def test_default_classification(exc: BaseException, retry: bool) -> None:
    assert is_transient(exc) is retry
    assert keel.Retry().should_retry(exc) is retry


def test_retry_on_and_give_up_on_override_the_defaults() -> None:
    eager = keel.Retry(retry_on=(ValueError,))
    assert eager.should_retry(ValueError("x")) and eager.should_retry(HTTPStatusError(503))
    assert not eager.should_retry(HTTPStatusError(404))
    picky = keel.Retry(give_up_on=(TimeoutError,))
    assert not picky.should_retry(TimeoutError()) and picky.should_retry(ConnectionError())
    by_status = keel.Retry(give_up_on=lambda e: status_of(e) == 503)
    assert not by_status.should_retry(HTTPStatusError(503))
    assert by_status.should_retry(HTTPStatusError(500))
    # give_up_on wins over retry_on
    both = keel.Retry(retry_on=(HTTPStatusError,), give_up_on=lambda e: status_of(e) == 401)
    assert both.should_retry(HTTPStatusError(400)) and not both.should_retry(HTTPStatusError(401))


# -- retries at the engine ---------------------------------------------------------------


async def test_attempts_are_counted_journaled_and_visible_to_the_tool(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Schedule("500", "conn", "503"), retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context, x: int) -> int:
        return await ctx.call(flaky, x) * 2

    handle = await app.start(wf, {"x": 21})
    assert await handle.result(RESULT) == 42
    assert [(a.attempt, a.outcome) for a in faults.of("flaky")] == [
        (1, "500"),
        (2, "conn"),
        (3, "503"),
        (4, "ok"),
    ]
    (rec,) = _tool_steps(await app.steps(handle.id), "flaky")
    assert rec.status is StepStatus.OK and rec.attempts == 4 and rec.output == 21
    assert rec.error is None and rec.fallback is None


async def test_attempts_stop_at_the_limit(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    down = faults.tool(app, "down", Always("503"), retry=keel.Retry(attempts=3, backoff=0.001))

    @app.workflow
    async def wf(ctx: keel.Context) -> None:
        await ctx.call(down, 1)

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert faults.count("down") == 3
    assert [a.attempt for a in faults.of("down")] == [1, 2, 3]
    err = info.value.error
    assert err is not None and err.attempts == 3 and err.type == "HTTPStatusError"


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("404", 1),
        ("400", 1),
        ("401", 1),
        ("value", 1),
        ("408", 3),
        ("429", 3),
        ("raise-timeout", 3),
        ("conn", 3),
        ("502", 3),
    ],
)
async def test_default_classification_at_the_engine(
    make_app: Callable[..., keel.App], fault: str, expected: int
) -> None:
    app = make_app()
    faults = Faults(retry_after=0.001)
    tool = faults.tool(app, "api", Always(fault), retry=keel.Retry(attempts=3, backoff=0.001))

    @app.workflow
    async def wf(ctx: keel.Context) -> None:
        await ctx.call(tool, 1)

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert faults.count("api") == expected
    assert info.value.error is not None and info.value.error.attempts == expected


async def test_pydantic_validation_error_in_a_tool_is_not_retried(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls = []

    @app.tool(retry=keel.Retry(attempts=5, backoff=0.001))
    async def parse(raw: dict[str, Any]) -> int:
        calls.append(raw)
        return Shape.model_validate(raw).n

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(parse, {"n": "not a number"})

    with pytest.raises(keel.RunFailed) as info:
        await (await app.start(wf)).result(RESULT)
    assert len(calls) == 1
    assert info.value.error is not None and info.value.error.type == "ValidationError"


async def test_retry_on_and_give_up_on_at_the_engine(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    eager = faults.tool(
        app,
        "eager",
        Schedule("value", "value"),
        retry=keel.Retry(attempts=5, backoff=0.001, retry_on=(ValueError,)),
    )
    quitter = faults.tool(
        app,
        "quitter",
        Always("503"),
        retry=keel.Retry(attempts=5, backoff=0.001, give_up_on=lambda e: status_of(e) == 503),
        fallback=keel.Fallback.degrade(default=-1),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[int]:
        return [await ctx.call(eager, 7), await ctx.call(quitter, 8)]

    assert await (await app.start(wf)).result(RESULT) == [7, -1]
    assert faults.count("eager") == 3 and faults.count("quitter") == 1


async def test_per_attempt_timeout_is_retried(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults(hang=60.0)  # each "timeout" attempt would hang a minute
    slow = faults.tool(app, "slow", Schedule("timeout", "timeout"), timeout=0.05, retry=FAST)
    hopeless = faults.tool(app, "hopeless", Always("timeout"), timeout=0.05, retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(slow, 5)

    @app.workflow
    async def wf2(ctx: keel.Context) -> int:
        return await ctx.call(hopeless, 5)

    assert await (await app.start(wf)).result(RESULT) == 5
    assert [a.outcome for a in faults.of("slow")] == ["timeout", "timeout", "ok"]
    handle = await app.start(wf2)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert faults.count("hopeless") == 4
    err = info.value.error
    assert err is not None and err.type == "TimeoutError" and err.attempts == 4
    (rec,) = _tool_steps(await app.steps(handle.id), "hopeless")
    assert rec.status is StepStatus.ERROR and rec.attempts == 4


async def test_deadline_stops_retrying(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults(retry_after=30.0)
    # A server asking for 30 s against a 1 s deadline: give up at once, do not wait.
    told_to_wait = faults.tool(
        app,
        "told_to_wait",
        Always("429"),
        retry=keel.Retry(attempts=10, backoff=0.001, deadline=1.0),
        fallback=keel.Fallback.degrade(default="gave up"),
    )
    # Steady 50 ms waits against a 0.3 s deadline: a handful of attempts, then stop.
    steady = faults.tool(
        app,
        "steady",
        Always("503"),
        retry=keel.Retry(attempts=100, backoff=0.05, multiplier=1, jitter=False, deadline=0.3),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.call(told_to_wait, 1)

    @app.workflow
    async def wf2(ctx: keel.Context) -> None:
        await ctx.call(steady, 1)

    assert await (await app.start(wf)).result(RESULT) == "gave up"
    assert faults.count("told_to_wait") == 1
    with pytest.raises(keel.RunFailed) as info:
        await (await app.start(wf2)).result(RESULT)
    n = faults.count("steady")
    # every wait is >= 50 ms and no wake may fall past the deadline: at most 0.3/0.05 + 1
    assert 2 <= n <= 7, n
    assert info.value.error is not None and info.value.error.attempts == n


async def test_with_options_overrides_retry_per_call(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Schedule("503", "503"), retry=keel.Retry(attempts=1))

    @app.workflow
    async def patient(ctx: keel.Context) -> int:
        return await ctx.call(flaky.with_options(retry=keel.Retry(attempts=5, backoff=0.001)), 3)

    @app.workflow
    async def declared(ctx: keel.Context) -> int:
        return await ctx.call(flaky, 4)

    @app.workflow
    async def degraded(ctx: keel.Context) -> int:
        return await ctx.call(flaky.with_options(fallback=keel.Fallback.degrade(default=0)), 5)

    h1 = await app.start(patient)
    assert await h1.result(RESULT) == 3
    assert faults.count("flaky") == 3
    (rec,) = _tool_steps(await app.steps(h1.id), "flaky")
    assert rec.attempts == 3
    with pytest.raises(keel.RunFailed):
        await (await app.start(declared)).result(RESULT)
    assert faults.count("flaky") == 4  # the declaration (one attempt) still applies elsewhere
    assert await (await app.start(degraded)).result(RESULT) == 0
    assert faults.count("flaky") == 5
    # the override did not change the registered tool
    assert app.registry.tools["flaky"].retry == keel.Retry(attempts=1)
    assert app.registry.tools["flaky"].fallback is None


async def test_with_options_timeout(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults(hang=60.0)
    slow = faults.tool(app, "slow", Schedule("timeout"), retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(slow.with_options(timeout=0.05), 9)

    assert await (await app.start(wf)).result(RESULT) == 9
    assert [a.outcome for a in faults.of("slow")] == ["timeout", "ok"]


async def test_retry_after_is_honoured_between_attempts(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    hook = Retrying()
    app.hooks.add(hook)
    faults = Faults(retry_after=0.3)
    limited = faults.tool(
        app, "limited", Schedule("429", "429"), retry=keel.Retry(attempts=3, backoff=0.001)
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(limited, 1)

    assert await (await app.start(wf)).result(RESULT) == 1
    times = faults.times("limited")
    assert len(times) == 3
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= 0.3 - EPS, times
    # each journaled wake time is at least Retry-After past the failed attempt
    assert [a for _, a, _ in hook.events] == [1, 2]
    for (_, n, wake), later in zip(hook.events, times[1:], strict=True):
        assert wake - times[n - 1] >= 0.3 - EPS
        assert later >= wake - EPS


async def test_retry_after_http_date_is_honoured_between_attempts(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults(retry_after=1.0)  # "Retry-After: <HTTP date one second ahead>"
    limited = faults.tool(
        app, "limited", Schedule("429-date"), retry=keel.Retry(attempts=2, backoff=0.001)
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(limited, 1)

    assert await (await app.start(wf)).result(RESULT) == 1
    first, second = faults.times("limited")
    # the date names a whole second after the failed attempt; not a moment earlier (EPS
    # for clock rounding; a first attempt within EPS of a whole second leaves no gap)
    assert second >= math.floor(first + 1.0) - EPS
    assert second > first


async def test_seeded_jitter_schedule_is_followed(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    hook = Retrying()
    app.hooks.add(hook)
    faults = Faults()
    retry = keel.Retry(attempts=4, backoff=0.08, seed=1234)
    flaky = faults.tool(app, "flaky", Schedule("500", "500", "500"), retry=retry)

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(flaky, 1)

    assert await (await app.start(wf)).result(RESULT) == 1
    key = faults.of("flaky")[0].key
    times = faults.times("flaky")
    planned = [retry.delay(n, key) for n in (1, 2, 3)]
    assert all(0 <= d <= 0.08 * 2 ** (n - 1) for n, d in zip((1, 2, 3), planned, strict=True))
    for (_, n, wake), before, after in zip(hook.events, times[:-1], times[1:], strict=True):
        assert wake - before >= planned[n - 1] - EPS  # the seeded delay, not another draw
        assert after >= wake - EPS


async def test_seeded_fault_rate_attempts_are_deterministic(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults(retry_after=0.001, hang=60.0)
    kinds = ("500", "429", "conn", "raise-timeout", "timeout", "malformed")
    plan = Seeded(rate=0.4, seed=3, kinds=kinds)
    noisy = faults.tool(
        app,
        "noisy",
        plan,
        returns=Shape,
        result=lambda i: {"n": i},
        validate=Shape,  # "malformed" output fails validation and is retried too
        timeout=0.05,
        retry=keel.Retry(attempts=12, backoff=0.001),
    )

    @app.workflow
    async def wf(ctx: keel.Context, n: int) -> list[int]:
        return [(await ctx.call(noisy, i)).n for i in range(n)]

    handle = await app.start(wf, {"n": 20})
    assert await handle.result(RESULT) == list(range(20))
    steps = _tool_steps(await app.steps(handle.id), "noisy")
    expected = {s.key: plan.attempts_needed(s.key) for s in steps}
    assert faults.per_key("noisy") == expected
    assert {s.key: s.attempts for s in steps} == expected
    seen = {a.outcome for a in faults.of("noisy")}
    assert seen == {"ok", *kinds}, seen  # the seed injects every kind of fault
    # every malformed attempt handed its validation messages to the next one
    by_key: dict[str, list[Any]] = {}
    for a in faults.of("noisy"):
        by_key.setdefault(a.key, []).append(a)
    for attempts in by_key.values():
        for before, after in itertools.pairwise(attempts):
            if before.outcome == "malformed":
                assert after.feedback == ("n: Field required",)
            else:
                assert after.feedback == ()


async def test_current_step_attempt_and_feedback_are_per_attempt(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    seen: list[tuple[int, str]] = []

    @app.tool(retry=FAST)
    async def probe() -> str:
        info = keel.current_step()
        assert info is not None
        seen.append((info.attempt, info.idempotency_key))
        if info.attempt < 3:
            raise keel.RetryableError("not yet")
        return "done"

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.call(probe)

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "done"
    assert [a for a, _ in seen] == [1, 2, 3]
    assert len({k for _, k in seen}) == 1  # one idempotency key across attempts
    assert keel.current_step() is None


# -- budgets -------------------------------------------------------------------------------


async def test_budget_is_shared_across_a_50_item_map(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    down = faults.tool(
        app,
        "down",
        Always("503"),
        retry=keel.Retry(attempts=4, backoff=0.001, budget=10),
        fallback=keel.Fallback.degrade(default=None),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        res = await ctx.map(down, range(50))
        return sum(v is None for v in res.values)

    handle = await app.start(wf)
    assert await handle.result(RESULT) == 50
    total = faults.count("down")
    assert 50 <= total <= 50 + 10, total
    assert total == 60  # every granted retry is used: the budget, no more
    steps = _tool_steps(await app.steps(handle.id), "down")
    assert len(steps) == 50
    assert sum(s.attempts for s in steps) == total
    assert all(s.fallback == "degrade" for s in steps)
    spent = [s for s in steps if s.error is not None and s.error.type == "BudgetExceeded"]
    # 10 retries cover at most 10 items: the others went straight to the fallback
    assert len(spent) >= 40
    for s in spent:
        assert s.error is not None and s.error.fallback == "degrade"
        assert s.error.data["tool"] == "down" and s.error.data["budget"] == 10
        assert s.error.cause is not None and s.error.cause.type == "HTTPStatusError"
        assert "503" in s.error.cause.message
    straight = [s for s in spent if s.attempts == 1]
    assert len(straight) >= 40
    info = await app.get_run(handle.id)
    assert len(info.degraded) == 50


async def test_budget_survives_suspension(make_app: Callable[..., keel.App]) -> None:
    """Retries granted before the run suspended count after it resumes: the budget is
    per run, not per execution."""
    app = make_app(inline_sleep_max=0.01)
    faults = Faults()
    down = faults.tool(
        app,
        "down",
        Always("503"),
        retry=keel.Retry(attempts=4, backoff=0.15, multiplier=1, jitter=False, budget=3),
        fallback=keel.Fallback.degrade(default=None),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        res = await ctx.map(down, range(5))
        return sum(v is None for v in res.values)

    handle = await app.start(wf)
    assert await handle.result(RESULT) == 5
    # each backoff suspended the run; still only 3 retries in all
    assert faults.count("down") == 5 + 3, faults.per_key("down")
    steps = _tool_steps(await app.steps(handle.id), "down")
    assert sum(s.attempts for s in steps) == 8


async def test_a_model_calls_budget_survives_the_run_suspending(store_url: str) -> None:
    """A Gateway's retry budget is per run for model calls too: a backoff that suspends
    the run (a new execution) recounts the retries earlier executions granted."""
    asked: list[str] = []

    def down(messages: list[dict[str, Any]]) -> str:
        asked.append(str(messages[-1]["content"]))
        raise _Unavailable()

    retry = keel.Retry(attempts=4, backoff=0.15, multiplier=1, jitter=False, budget=3)
    gateway = keel.llm.Gateway({"m": keel.llm.ScriptedModel(down)}, default="m", retry=retry)
    settings = Settings(poll_interval=0.02, inline_sleep_max=0.01)
    app = keel.App(store_url, llm=gateway, settings=settings)
    try:

        @app.workflow
        async def wf(ctx: keel.Context) -> list[str]:
            stale = keel.Fallback.degrade("stale")
            return [await ctx.llm.text(f"q{i}", name="down", fallback=stale) for i in range(3)]

        assert await (await app.start(wf)).result(RESULT) == ["stale"] * 3
        assert len(asked) == 3 + 3, asked  # three calls, three retries in all
    finally:
        await app.close()


class _Unavailable(Exception):
    def __init__(self) -> None:
        super().__init__("provider said 503")
        self.status_code = 503


async def test_budget_counts_every_call_of_the_tool_in_the_run(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(
        app,
        "flaky",
        Schedule("500", "500"),
        retry=keel.Retry(attempts=3, backoff=0.001, budget=4),
        fallback=keel.Fallback.degrade(default=-1),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[int]:
        return [await ctx.call(flaky, i) for i in range(4)]

    # calls 1 and 2 use two retries each and succeed; 3 and 4 find the budget spent
    assert await (await app.start(wf)).result(RESULT) == [0, 1, -1, -1]
    assert faults.count("flaky") == 3 + 3 + 1 + 1


# -- circuit breaker -------------------------------------------------------------------------


def test_breaker_state_with_a_fake_clock() -> None:
    now = [100.0]
    b = BreakerState(keel.CircuitBreaker(failures=3, reset_after=10), clock=lambda: now[0])
    assert b.state == "closed" and b.allow()
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.retry_in() == 10
    now[0] += 9.9
    assert b.state == "open" and not b.allow()
    now[0] += 0.1
    assert b.state == "half-open"
    assert b.allow()  # one probe ...
    assert not b.allow() and not b.allow()  # ... and only one
    b.failure()  # the probe failed: open again for a full cool-down
    assert b.state == "open" and not b.allow() and b.retry_in() == 10
    now[0] += 10
    assert b.allow()
    b.abandon()  # the probe was cut short without a verdict: another may go
    assert b.state == "half-open" and b.allow() and not b.allow()
    b.success()  # the probe succeeded: closed
    assert b.state == "closed" and b.allow() and b.allow() and b.retry_in() == 0
    b.failure()
    assert b.state == "closed"  # counting starts over
    with pytest.raises(ValueError):
        keel.CircuitBreaker(failures=0)


async def test_breaker_opens_then_half_opens_then_closes(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    plan = Calls("503", "503", "503", "503", then="ok")
    config = keel.CircuitBreaker(failures=3, reset_after=30)
    clock = FakeClock().install(app, "api", config)
    api = faults.tool(app, "api", plan, breaker=config, fallback=keel.Fallback.degrade(default=-1))

    @app.workflow
    async def wf(ctx: keel.Context) -> list[int]:
        out = [await ctx.call(api, i) for i in range(5)]  # 3 failures open it; 2 skipped
        clock.now += 30  # the cool-down passes
        out.append(await ctx.call(api, 5))  # half-open: the probe fails, open again
        clock.now += 29.9
        out.append(await ctx.call(api, 6))  # a full cool-down from the probe: still open
        clock.now += 0.1
        out.append(await ctx.call(api, 7))  # the probe succeeds: closed
        out.append(await ctx.call(api, 8))
        out.append(await ctx.call(api, 9))
        return out

    handle = await app.start(wf)
    assert await handle.result(RESULT) == [-1, -1, -1, -1, -1, -1, -1, 7, 8, 9]
    attempted = [a.key for a in faults.of("api")]
    assert [k.split("#")[1] for k in attempted] == ["0", "1", "2", "5", "7", "8", "9"]
    steps = {s.key.split("#")[1]: s for s in _tool_steps(await app.steps(handle.id), "api")}
    for i in ("3", "4", "6"):
        err = steps[i].error
        assert err is not None and err.type == "CircuitOpen" and err.fallback == "degrade"
        assert steps[i].attempts == 0  # never attempted
    for i in ("0", "1", "2", "5"):
        assert steps[i].error is not None and steps[i].error.type == "HTTPStatusError"
    assert app.runtime.breakers["api"].state == "closed"


async def test_open_breaker_is_per_process_and_spans_runs(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    api = faults.tool(
        app,
        "api",
        Always("500"),
        retry=keel.Retry(attempts=5, backoff=0.001),
        breaker=keel.CircuitBreaker(failures=2, reset_after=60),
        fallback=keel.Fallback.degrade(default="cached"),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.call(api, 1)

    # run 1: two attempts fail, the breaker opens mid-retry and the step falls back
    h1 = await app.start(wf)
    assert await h1.result(RESULT) == "cached"
    assert faults.count("api") == 2
    (rec,) = _tool_steps(await app.steps(h1.id), "api")
    assert rec.error is not None and rec.error.type == "CircuitOpen" and rec.attempts == 2
    # run 2 in the same process: no attempt at all
    h2 = await app.start(wf)
    assert await h2.result(RESULT) == "cached"
    assert faults.count("api") == 2
    # a fresh process (another App on the same store) has its own, closed breaker
    other = make_app()
    faults2 = Faults()
    api2 = faults2.tool(other, "api", Schedule(), breaker=keel.CircuitBreaker(failures=2))

    @other.workflow
    async def wf3(ctx: keel.Context) -> str:
        return await ctx.call(api2, "fresh")

    assert await (await other.start(wf3)).result(RESULT) == "fresh"
    assert faults2.count("api") == 1


async def test_half_open_lets_exactly_one_probe_through_a_map(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults(slow=0.05)
    config = keel.CircuitBreaker(failures=1, reset_after=30)
    clock = FakeClock().install(app, "api", config)
    api = faults.tool(
        app,
        "api",
        Calls("500", "slow", then="ok"),  # the probe is still in flight while others ask
        breaker=config,
        fallback=keel.Fallback.degrade(default=-1),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[int | None]:
        first = await ctx.call(api, 100)  # opens the breaker
        clock.now += 30
        res = await ctx.map(api, range(6), concurrency=6)
        after = await ctx.call(api, 200)  # the probe succeeded: closed again
        return [first, *res.values, after]

    handle = await app.start(wf)
    out = await handle.result(RESULT)
    assert out[0] == -1 and out[-1] == 200
    items = out[1:-1]
    probes = [i for i, v in enumerate(items) if v != -1]
    assert len(probes) == 1 and items[probes[0]] == probes[0]
    assert [a.outcome for a in faults.of("api")] == ["500", "slow", "ok"]
    steps = _tool_steps(await app.steps(handle.id), "api")
    skipped = [s for s in steps if s.error is not None and s.error.type == "CircuitOpen"]
    assert len(skipped) == 5 and all(s.attempts == 0 for s in skipped)
    assert app.runtime.breakers["api"].state == "closed"


async def test_an_interrupted_probe_does_not_wedge_the_breaker(
    make_app: Callable[..., keel.App],
) -> None:
    """A half-open probe cut short (worker stopped, lease lost) must let a later call
    probe again, not leave the breaker open for the life of the process."""
    app = make_app()
    faults = Faults(slow=60.0)
    config = keel.CircuitBreaker(failures=1, reset_after=30)
    clock = FakeClock().install(app, "api", config)
    api = faults.tool(
        app,
        "api",
        Calls("500", "slow", then="ok"),  # fail (opens), then a probe that hangs
        breaker=config,
        fallback=keel.Fallback.degrade(default=-1),
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[int]:
        first = await ctx.call(api, 1)
        if clock.now == 1000.0:  # once (the resumed run replays this code)
            clock.now += 30
        return [first, await ctx.call(api, 2)]

    handle = await app.start(wf)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESULT
    while faults.count("api") < 2:  # the probe is in flight
        assert loop.time() < deadline, "the probe never started"
        await asyncio.sleep(0.005)
    await app.stop_worker()  # graceful stop: the run goes back to the queue mid-probe
    resumed = await app.start(wf, id=handle.id)  # same process, same breakers
    assert await resumed.result(RESULT) == [-1, 2]
    assert [a.outcome for a in faults.of("api")] == ["500", "slow", "ok"]
    assert app.runtime.breakers["api"].state == "closed"


async def test_run_waits_with_wake_at_for_a_long_backoff(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(inline_sleep_max=0.05)
    faults = Faults()
    flaky = faults.tool(
        app, "flaky", Schedule("503"), retry=keel.Retry(attempts=3, backoff=0.4, jitter=False)
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(flaky, 6)

    handle = await app.start(wf)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING
    (pending,) = _tool_steps(await app.steps(handle.id), "flaky")
    assert pending.status is StepStatus.PENDING and pending.attempts == 1
    assert pending.error is not None and pending.error.type == "HTTPStatusError"
    assert pending.wake_at is not None and info.wake_at == pending.wake_at
    assert pending.wake_at - faults.times("flaky")[0] >= 0.4 - EPS
    assert await handle.result(RESULT) == 6
    times = faults.times("flaky")
    assert len(times) == 2 and times[1] >= pending.wake_at - EPS
    (done,) = _tool_steps(await app.steps(handle.id), "flaky")
    assert done.status is StepStatus.OK and done.attempts == 2
