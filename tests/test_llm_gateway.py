"""The LLM gateway: routing, fallbacks and cool-downs, rate limits, budgets, the response
cache, the journal and metering of model calls, and the lazy LiteLLM import.

Offline: every model is a `ScriptedModel` behind LiteLLM's custom-provider path.
Time-based behaviour (cool-downs, TTLs, rate limits) runs on fake clocks patched into
the module under test, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import (
    Budgets,
    Cassette,
    Gateway,
    LLMResponse,
    ModelSpec,
    Reply,
    ScriptedModel,
    ratelimit,
)
from keel.llm import cache as cache_mod
from keel.llm import gateway as gateway_mod
from keel.llm.gateway import CallContext
from keel.llm.ratelimit import RateLimiter, TokenBucket
from keel.types import RunStatus, StepStatus
from tests.backends import sql
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
NO_RETRY = keel.Retry(attempts=1)
HI = [{"role": "user", "content": "hi"}]


class StatusError(Exception):
    """What a provider SDK raises: an exception carrying an HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"provider said {status}")
        self.status_code = status


def failing(status: int) -> Callable[[list[dict[str, Any]]], str]:
    def fn(messages: list[dict[str, Any]]) -> str:
        raise StatusError(status)

    return fn


class Clock:
    """A fake clock: `now` only moves when a test (or a fake sleep) moves it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def llm_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    """`llm_app(llm)`: an App on this test's store with `llm=...`; closed at teardown."""
    apps: list[keel.App] = []

    def make(llm: Any, **settings: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02, **settings), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


def llm_steps(steps: list[keel.StepRecord]) -> list[keel.StepRecord]:
    return [s for s in steps if s.kind.value == "llm"]


def responses(steps: list[keel.StepRecord]) -> list[LLMResponse]:
    return [LLMResponse.model_validate(s.output) for s in llm_steps(steps)]


async def usage_rows(app: keel.App, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """The usage table, read straight from the store's database: each model call's own
    row (run, step, workflow, tenant, model, tokens, cost, hit), which no store interface
    returns (usage_report sums them by group)."""
    query = "SELECT run_id, step_key, workflow, tenant, model, input_tokens, output_tokens,"
    query += " cost_usd, cache_hit FROM usage"
    args: tuple[Any, ...] = ()
    if run_id is not None:
        query += " WHERE run_id=?"
        args = (run_id,)
    return sorted(sql(app.store.url, query + " ORDER BY run_id, step_key", *args))  # type: ignore[attr-defined]


# -- routing -------------------------------------------------------------------------------


async def test_aliases_default_and_raw_model_strings() -> None:
    fast = ScriptedModel(lambda m: "from fast")
    smart = ScriptedModel(lambda m: "from smart")
    gw = Gateway({"fast": fast, "smart": smart}, default="fast")
    assert (await gw.complete(HI, CallContext())).content == "from fast"
    resp = await gw.complete(HI, CallContext(), model="smart")
    assert resp.content == "from smart" and resp.model == smart.model and resp.tried == ["smart"]
    # a LiteLLM model string that is not an alias is called as is
    resp = await gw.complete(HI, CallContext(), model=fast.model)
    assert resp.content == "from fast"
    assert len(fast.calls) == 2 and len(smart.calls) == 1
    # one model: it is the default
    assert (await Gateway({"only": smart}).complete(HI, CallContext())).content == "from smart"


async def test_routes_by_workflow_and_call_name_then_workflow_then_default() -> None:
    models = {n: ScriptedModel(default=n) for n in ("base", "mid", "smart")}
    gw = Gateway(models, default="base", routes={"triage.draft": "smart", "triage": "mid"})

    async def answer(workflow: str, name: str, model: str | None = None) -> str | None:
        return (await gw.complete(HI, CallContext(workflow, name), model=model)).content

    assert await answer("triage", "draft") == "smart"
    assert await answer("triage", "classify") == "mid"
    assert await answer("billing", "draft") == "base"
    assert await answer("triage", "draft", model="base") == "base"  # model= wins


async def test_routing_reaches_ctx_llm_calls_by_name(llm_app: Callable[..., keel.App]) -> None:
    base = ScriptedModel(lambda m: "base")
    smart = ScriptedModel(lambda m: "smart")
    app = llm_app(
        Gateway({"base": base, "smart": smart}, default="base", routes={"triage.draft": "smart"})
    )

    @app.workflow
    async def triage(ctx: keel.Context) -> list[str]:
        return [await ctx.llm.text("a", name="classify"), await ctx.llm.text("b", name="draft")]

    handle = await app.start(triage)
    assert await handle.result(RESULT) == ["base", "smart"]
    keys = [s.key for s in llm_steps(await app.steps(handle.id))]
    assert keys == ["llm:classify#0", "llm:draft#0"]


async def test_keel_model_overrides_every_alias(
    monkeypatch: pytest.MonkeyPatch, llm_app: Callable[..., keel.App]
) -> None:
    scripted = ScriptedModel(lambda m: "scripted")
    real = ScriptedModel(lambda m: "from KEEL_MODEL")
    monkeypatch.setenv("KEEL_MODEL", real.model)
    gw = Gateway(
        {"fast": ModelSpec(scripted, params={"temperature": 0}), "smart": scripted},
        default="fast",
    )
    assert (await gw.complete(HI, CallContext())).content == "from KEEL_MODEL"
    resp = await gw.complete(HI, CallContext(), model="smart")
    assert resp.model == real.model and not scripted.calls
    assert real.calls[0]["params"].get("temperature") == 0  # the alias's params stay

    # an App with no llm= at all uses KEEL_MODEL
    app = llm_app(None)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("hello")

    assert await (await app.start(wf)).result(RESULT) == "from KEEL_MODEL"


async def test_unknown_alias_and_missing_default_are_config_errors(
    llm_app: Callable[..., keel.App],
) -> None:
    a, b = ScriptedModel(lambda m: "a"), ScriptedModel(lambda m: "b")
    gw = Gateway({"fast": a, "smart": b}, default="fast")
    with pytest.raises(keel.ConfigError, match=r"unknown model 'nope' \(aliases: fast, smart\)"):
        await gw.complete(HI, CallContext(), model="nope")
    with pytest.raises(keel.ConfigError, match="no model chosen"):
        await Gateway({"fast": a, "smart": b}).complete(HI, CallContext())
    with pytest.raises(keel.ConfigError, match="'ghost'"):
        Gateway({"fast": a}, fallbacks={"fast": ["ghost"]})
    with pytest.raises(keel.ConfigError, match="takes a Gateway"):
        Gateway.of(42)
    assert not a.calls and not b.calls

    app = llm_app(gw)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("hello", model="nope")

    info = await (await app.start(wf)).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "ConfigError" and "nope" in info.error.message


async def test_app_without_a_model_says_how_to_configure_one(
    monkeypatch: pytest.MonkeyPatch, llm_app: Callable[..., keel.App]
) -> None:
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    app = llm_app(None)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("hello")

    info = await (await app.start(wf)).settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "ConfigError" and "KEEL_MODEL" in info.error.message


# -- fallbacks and cool-downs -----------------------------------------------------------------


async def test_a_503_is_a_litellm_service_unavailable_error() -> None:
    """What LiteLLM turns a provider's 503 into: a transient error Keel recognises."""
    from keel.llm._litellm import litellm
    from keel.policy.retry import is_transient

    down = ScriptedModel(failing(503))
    Gateway({"x": down})._setup()
    with pytest.raises(Exception) as info:
        await litellm().acompletion(model=down.model, messages=HI)
    assert type(info.value).__name__ == "ServiceUnavailableError"
    assert getattr(info.value, "status_code", None) == 503 and is_transient(info.value)


async def test_transient_failure_falls_back_in_order(llm_app: Callable[..., keel.App]) -> None:
    first = ScriptedModel(failing(503))
    second = ScriptedModel(failing(429))
    third = ScriptedModel(lambda m: "third answered")
    gw = Gateway(
        {"first": first, "second": second, "third": third},
        default="first",
        fallbacks={"first": ["second", "third"]},
        retry=NO_RETRY,
    )
    app = llm_app(gw)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("hello")

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "third answered"
    (resp,) = responses(await app.steps(handle.id))
    assert resp.tried == ["first", "second", "third"]
    assert resp.model == third.model
    assert [len(first.calls), len(second.calls), len(third.calls)] == [1, 1, 1]


async def test_non_transient_errors_do_not_fall_back() -> None:
    bad = ScriptedModel(failing(400))
    spare = ScriptedModel(lambda m: "spare")
    gw = Gateway({"bad": bad, "spare": spare}, default="bad", fallbacks={"bad": ["spare"]})
    with pytest.raises(Exception) as info:
        await gw.complete(HI, CallContext())
    assert getattr(info.value, "status_code", None) == 400
    assert type(info.value).__name__ == "BadRequestError"
    assert len(bad.calls) == 1 and not spare.calls
    assert "bad" not in gw._cooling  # a bad request says nothing about the model's health


async def test_a_failed_model_cools_down_then_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(
        gateway_mod,
        "time",
        SimpleNamespace(monotonic=clock, perf_counter=time.perf_counter, time=time.time),
    )
    healthy = {"yes": False}

    def flaky(messages: list[dict[str, Any]]) -> str:
        if not healthy["yes"]:
            raise StatusError(503)
        return "primary"

    primary = ScriptedModel(flaky)
    backup = ScriptedModel(lambda m: "backup")
    gw = Gateway(
        {"primary": primary, "backup": backup},
        default="primary",
        fallbacks={"primary": ["backup"]},
        cooldown=5.0,
    )

    resp = await gw.complete(HI, CallContext())
    assert resp.content == "backup" and resp.tried == ["primary", "backup"]
    assert (len(primary.calls), len(backup.calls)) == (1, 1)

    healthy["yes"] = True  # recovered, but still cooling down: not asked
    clock.now += 4.9
    resp = await gw.complete(HI, CallContext())
    assert resp.content == "backup" and resp.tried == ["primary (cooling down)", "backup"]
    assert (len(primary.calls), len(backup.calls)) == (1, 2)

    clock.now += 0.2  # the cool-down is over
    resp = await gw.complete(HI, CallContext())
    assert resp.content == "primary" and resp.tried == ["primary"]
    assert (len(primary.calls), len(backup.calls)) == (2, 2)


async def test_every_model_failing_is_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(
        gateway_mod,
        "time",
        SimpleNamespace(monotonic=clock, perf_counter=time.perf_counter, time=time.time),
    )
    a, b = ScriptedModel(failing(503)), ScriptedModel(failing(502))
    gw = Gateway({"a": a, "b": b}, default="a", fallbacks={"a": ["b"]}, cooldown=7.0)
    with pytest.raises(keel.ModelUnavailable) as info:
        await gw.complete(HI, CallContext())
    err = info.value
    assert err.tried == ["a", "b"] and "tried a, b" in str(err)  # type: ignore[attr-defined]
    # the cool-downs are no reason to wait: the step's Retry backoff decides
    assert err.retry_after is None  # type: ignore[attr-defined]
    # cooling down, the last model of the chain is still tried (something must be)
    with pytest.raises(keel.ModelUnavailable) as info:
        await gw.complete(HI, CallContext())
    assert info.value.tried == ["a (cooling down)", "b"]  # type: ignore[attr-defined]
    assert (len(a.calls), len(b.calls)) == (1, 2)


async def test_a_failed_llm_step_is_retried_by_the_gateways_retry_policy(
    llm_app: Callable[..., keel.App],
) -> None:
    answers: list[str] = []

    def blip(messages: list[dict[str, Any]]) -> str:
        answers.append("x")
        if len(answers) == 1:
            raise StatusError(503)
        return "recovered"

    model = ScriptedModel(blip)
    # one model, so nothing to fall back to: the step retries (the default cool-down of
    # 30 s does not hold the retry back: the only model is always tried)
    app = llm_app(Gateway({"m": model}, retry=keel.Retry(attempts=3, backoff=0.001)))

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("hello")

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "recovered"
    (rec,) = llm_steps(await app.steps(handle.id))
    assert rec.attempts == 2 and len(model.calls) == 2
    assert LLMResponse.model_validate(rec.output).tried == ["m"]


# -- rate limits ---------------------------------------------------------------------------


def fake_time(monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, list[float]]:
    """Patch keel.llm.ratelimit onto a fake clock whose sleeps advance it instantly."""
    clock = Clock()
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        clock.now += delay
        await asyncio.sleep(0)

    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=clock, time=clock))
    fake = SimpleNamespace(
        Lock=asyncio.Lock, sleep=sleep, get_running_loop=asyncio.get_running_loop
    )
    monkeypatch.setattr(ratelimit, "asyncio", fake)
    return clock, slept


async def test_token_bucket_bursts_then_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, _ = fake_time(monkeypatch)
    bucket = TokenBucket(60)  # one a second, a burst of 60
    assert [bucket.wait_for(1) for _ in range(60)] == [0.0] * 60
    assert bucket.wait_for(1) == pytest.approx(1.0)  # empty: the next is a second away
    clock.now += 0.5
    assert bucket.wait_for(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait_for(1) == 0.0
    clock.now += 3600  # refills to its capacity, never beyond
    assert [bucket.wait_for(1) for _ in range(60)] == [0.0] * 60
    assert bucket.wait_for(1) > 0
    assert bucket.wait_for(1000) == pytest.approx(60.0)  # oversized: waits for a full bucket
    with pytest.raises(ValueError):
        TokenBucket(0)


async def test_rate_limiter_waits_for_requests_and_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, _ = fake_time(monkeypatch)
    start = clock.now
    tpm = RateLimiter(tpm=6000)  # 100 tokens a second
    assert await tpm.acquire(6000) == 0.0
    assert await tpm.acquire(500) == pytest.approx(5.0)
    assert clock.now - start == pytest.approx(5.0)

    both = RateLimiter(rpm=600, tpm=60)  # 10 requests and 1 token a second
    assert await both.acquire(60) == 0.0
    for _ in range(100):
        assert await both.acquire(0) == 0.0
    assert both.requests is not None and both.requests.level == pytest.approx(499.0)
    # tokens are short: the request slot is given back while it waits 6 s (60 slots
    # refill meanwhile), then taken once, not twice
    assert await both.acquire(6) == pytest.approx(6.0)
    assert both.requests.level == pytest.approx(499.0 + 60 - 1)


async def test_rpm_limit_holds_under_50_concurrent_steps(
    monkeypatch: pytest.MonkeyPatch, llm_app: Callable[..., keel.App]
) -> None:
    clock, slept = fake_time(monkeypatch)
    admitted: list[float] = []
    original = RateLimiter.acquire

    async def spy(self: RateLimiter, tokens: int) -> float:
        waited = await original(self, tokens)
        admitted.append(clock.now)
        return waited

    monkeypatch.setattr(RateLimiter, "acquire", spy)
    rpm = 30  # a burst of 30, then one every 2 s
    model = ScriptedModel(lambda m: "ok")
    app = llm_app(Gateway({"m": ModelSpec(model, rpm=rpm)}, retry=NO_RETRY))

    async def ask(ctx: keel.Context, i: int) -> str:
        return await ctx.llm.text(f"item {i}")

    @app.workflow
    async def fan(ctx: keel.Context) -> int:
        res = await ctx.map(ask, range(50), concurrency=50)
        return len(res.ok)

    handle = await app.start(fan)
    assert await handle.result(RESULT) == 50
    assert len(model.calls) == 50 and len(admitted) == 50
    t0 = admitted[0]
    # never more than the burst plus what refilled since the first request
    for n, t in enumerate(admitted, 1):
        assert n <= rpm + (t - t0) * rpm / 60 + 1e-6, (n, t - t0)
    assert admitted[rpm - 1] == t0  # the burst went at once
    assert admitted[-1] - t0 == pytest.approx((50 - rpm) * 60 / rpm)  # the rest, paced
    assert len(slept) >= 50 - rpm
    assert set(app.gateway._limiters) == {"m"}  # one limiter shared by every step


def test_a_rate_limiter_serves_one_event_loop_after_another() -> None:
    """`App.run` runs each call on a new event loop; the limiter's queue must follow."""
    limiter = RateLimiter(rpm=6000)

    async def contend() -> None:
        assert limiter.requests is not None
        limiter.requests.level = 0.0  # empty: every request waits its turn in the queue
        await asyncio.gather(*[limiter.acquire(1) for _ in range(3)])

    asyncio.run(contend())
    asyncio.run(contend())  # no "bound to a different event loop"


# -- budgets ---------------------------------------------------------------------------------


def priced(fn: Callable[..., Any]) -> ScriptedModel:
    """A scripted model priced (and tokenised) like gpt-4o-mini."""
    return ScriptedModel(fn, price_as="gpt-4o-mini")


BIG_PROMPT = "lorem ipsum dolor sit amet " * 2000  # ~10k tokens: ~$0.0015 at gpt-4o-mini


async def test_budget_refuses_a_call_before_it_is_sent(llm_app: Callable[..., keel.App]) -> None:
    model = priced(lambda m: "fine")
    app = llm_app(Gateway({"m": model}, budgets=Budgets(per_run=0.001)))

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        small = await ctx.llm.text("hi", max_tokens=10)
        big = await ctx.llm.text(BIG_PROMPT)
        return [small, big]

    handle = await app.start(wf)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "BudgetExceeded"
    assert info.error.data["scope"] == "run" and info.error.data["budget"] == 0.001
    assert "was not sent" in info.error.message
    assert len(model.calls) == 1  # the small call only: the big one never reached the model
    small, big = llm_steps(await app.steps(handle.id))
    assert small.status is StepStatus.OK
    assert big.status is StepStatus.ERROR and big.attempts == 1  # refused, not retried
    assert [r[1] for r in await usage_rows(app, handle.id)] == [small.key]


async def test_budget_refusal_takes_the_steps_fallback(llm_app: Callable[..., keel.App]) -> None:
    model = priced(lambda m: "expensive answer")
    app = llm_app(Gateway({"m": model}, budgets=Budgets(per_run=0.001)))

    @app.workflow
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        no_summary = keel.Fallback.degrade("(no summary)")
        small = await ctx.llm.complete(HI, max_tokens=10, fallback=no_summary)
        text = await ctx.llm.text(BIG_PROMPT, fallback=no_summary)
        await ctx.wait_for("go")  # the resume replays both steps, the degraded one too
        return {"small": small.content, "text": text, "missing": ctx.degraded}

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    await handle.signal("go")
    out = await handle.result(RESULT)
    assert out["small"] == "expensive answer"  # within budget: the model's LLMResponse
    assert out["text"] == "(no summary)" and len(model.calls) == 1
    ok, rec = llm_steps(await app.steps(handle.id))
    assert out["missing"] == [rec.key]
    assert rec.fallback == "degrade" and rec.output == "(no summary)"
    assert rec.error is not None and rec.error.type == "BudgetExceeded"
    assert (await app.get_run(handle.id)).degraded == [rec.key]
    assert [r[1] for r in await usage_rows(app)] == [ok.key]


async def test_a_sent_calls_cost_counts_until_its_usage_is_stored(
    llm_app: Callable[..., keel.App],
) -> None:
    # each answer costs $0.012 (20k output tokens), far over its small estimate
    model = priced(lambda m: Reply(content="essay", output_tokens=20_000))
    gateway = Gateway({"m": model}, budgets=Budgets(per_run=0.01), retry=NO_RETRY)
    app = llm_app(gateway)
    cc = CallContext("wf", "text", run_id="r-held", store=app.store)
    held: list[Any] = []
    first = await gateway.complete(HI, cc, params={"max_tokens": 10}, cache=False, held=held)
    assert first.cost_usd > 0.01 and len(held) == 1
    # not stored yet (a step commits it), but still counted: the second call is refused
    assert await app.store.spent(run_id="r-held") == 0
    with pytest.raises(keel.BudgetExceeded, match="was not sent"):
        await gateway.complete(HI, cc, params={"max_tokens": 10}, cache=False)
    assert len(model.calls) == 1
    gateway.release(held[0])
    assert gateway._inflight == {}  # nothing left behind per run
    # released without storing it (as if the step were lost): the budget is free again
    await gateway.complete(HI, cc, params={"max_tokens": 10}, cache=False)
    assert len(model.calls) == 2 and gateway._inflight == {}


async def test_a_burst_of_concurrent_steps_fills_the_budget_and_no_more(
    llm_app: Callable[..., keel.App],
) -> None:
    # $0.012 an answer, estimated exactly (max_tokens = what it writes); room for two
    model = priced(lambda m: Reply(content="essay", output_tokens=20_000))
    gateway = Gateway({"m": model}, budgets=Budgets(per_run=0.03), retry=NO_RETRY)
    app = llm_app(gateway)

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        fallback = keel.Fallback.degrade("(over budget)")

        async def one(i: int) -> str:
            return await ctx.llm.text(
                f"essay {i}", max_tokens=20_000, cache=False, fallback=fallback
            )

        return list(await ctx.gather(*[one(i) for i in range(6)]))

    handle = await app.start(wf)
    out = await handle.result(RESULT)
    assert sorted(out) == ["(over budget)"] * 4 + ["essay"] * 2  # the first two, not none
    assert 0.02 < await app.store.spent(run_id=handle.id) <= 0.03
    assert gateway._inflight == {}


async def test_a_budget_refusal_falls_back_to_a_cheaper_model(
    llm_app: Callable[..., keel.App],
) -> None:
    smart = ScriptedModel(lambda m: "smart answer", price_as="gpt-4o")  # ~17x the price
    fast = priced(lambda m: "fast answer")
    gateway = Gateway(
        {"smart": smart, "fast": fast},
        default="smart",
        fallbacks={"smart": ["fast"]},
        budgets=Budgets(per_run=0.01),
        retry=NO_RETRY,
    )
    app = llm_app(gateway)

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        first = await ctx.llm.complete(HI, max_tokens=500, cache=False)  # fits on smart
        big = await ctx.llm.complete(HI, max_tokens=1500, cache=False)  # only fast fits
        return [first.content, big.content, *big.tried]

    out = await (await app.start(wf)).result(RESULT)
    assert out == ["smart answer", "fast answer", "smart (over budget)", "fast"]
    assert len(smart.calls) == 1 and len(fast.calls) == 1
    cc = CallContext("wf", "t", run_id="r-poor", store=app.store)
    with pytest.raises(keel.BudgetExceeded):  # neither fits: refused, nothing sent
        await gateway.complete(HI, cc, params={"max_tokens": 100_000}, cache=False)
    assert len(smart.calls) == 1 and len(fast.calls) == 1


async def test_workflow_day_budget_accumulates_across_runs(
    llm_app: Callable[..., keel.App],
) -> None:
    # every answer costs 20k output tokens at gpt-4o-mini prices: $0.012
    model = priced(lambda m: Reply(content="long essay", output_tokens=20_000))
    budgets = Budgets(per_workflow_day={"spendy": 0.01})
    app = llm_app(Gateway({"m": model}, budgets=budgets))

    # (cache=False: a cache hit would be free, and so never refused)
    @app.workflow
    async def spendy(ctx: keel.Context) -> str:
        return await ctx.llm.text("write", max_tokens=10, cache=False)

    @app.workflow
    async def other(ctx: keel.Context) -> str:
        return await ctx.llm.text("write", max_tokens=10, cache=False)

    first = await app.start(spendy)
    assert await first.result(RESULT) == "long essay"  # its estimate fitted the budget
    spent = await app.store.spent(workflow="spendy")
    (resp,) = responses(await app.steps(first.id))
    assert spent == pytest.approx(resp.cost_usd) and spent > 20_000 * 0.6e-6 > 0.01

    second = await app.start(spendy)  # a new run of the same workflow, same day: refused
    info = await second.settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "BudgetExceeded" and info.error.data["scope"] == "wf"
    assert len(model.calls) == 1

    # another workflow has no such limit
    assert await (await app.start(other)).result(RESULT) == "long essay"
    assert len(model.calls) == 2
    assert await app.store.spent(workflow="spendy") == pytest.approx(spent)


async def test_tenant_day_budget(llm_app: Callable[..., keel.App]) -> None:
    model = priced(lambda m: Reply(content="ok", output_tokens=20_000))
    app = llm_app(Gateway({"m": model}, budgets=Budgets(per_tenant_day=0.01)))

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text("go", max_tokens=10, cache=False)

    assert await (await app.start(wf, tenant="acme")).result(RESULT) == "ok"
    refused = await (await app.start(wf, tenant="acme")).settle(RESULT)
    assert refused.error is not None and refused.error.data["scope"] == "tenant"
    assert await (await app.start(wf, tenant="globex")).result(RESULT) == "ok"
    assert len(model.calls) == 2


async def test_unpriced_models_are_never_refused(llm_app: Callable[..., keel.App]) -> None:
    model = ScriptedModel(lambda m: "free")  # no price_as: costs nothing
    app = llm_app(Gateway({"m": model}, budgets=Budgets(per_run=0.0)))

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.llm.text(BIG_PROMPT)

    assert await (await app.start(wf)).result(RESULT) == "free"


# -- cache ---------------------------------------------------------------------------------


async def test_cache_hit_miss_and_opt_out(llm_app: Callable[..., keel.App]) -> None:
    model = priced(lambda m: "answer")
    app = llm_app(Gateway({"m": model}, cache=True))  # a scripted model: cached when asked

    @app.workflow
    async def wf(ctx: keel.Context) -> list[bool]:
        calls = [
            ctx.llm.complete([{"role": "user", "content": "q"}]),  # miss: sent
            ctx.llm.complete([{"role": "user", "content": "q"}]),  # hit
            ctx.llm.complete([{"role": "user", "content": "q"}], temperature=0.5),  # miss
            ctx.llm.complete([{"role": "user", "content": "q"}], timeout=30),  # hit
            ctx.llm.complete([{"role": "user", "content": "q"}], cache=False),  # opted out
            ctx.llm.complete([{"role": "user", "content": "other"}]),  # miss
        ]
        return [(await c).cache_hit for c in calls]

    handle = await app.start(wf)
    assert await handle.result(RESULT) == [False, True, False, True, False, False]
    assert len(model.calls) == 4
    resps = responses(await app.steps(handle.id))
    for r in resps:
        assert r.content == "answer"
        assert (r.cost_usd == 0.0) == r.cache_hit
        assert (r.latency_ms == 0.0) == r.cache_hit
    rows = await usage_rows(app, handle.id)
    assert [bool(r[8]) for r in rows] == [r.cache_hit for r in resps]
    assert sum(r[7] for r in rows) == pytest.approx(sum(r.cost_usd for r in resps))
    (report,) = await app.store.usage_report("run")
    assert report.calls == 6 and report.cache_hits == 2

    # a gateway with the cache off never reads or writes it
    off = ScriptedModel(lambda m: "x")
    app2 = llm_app(Gateway({"m": off}, cache=False))

    @app2.workflow
    async def twice(ctx: keel.Context) -> list[bool]:
        return [(await ctx.llm.complete(HI)).cache_hit for _ in range(2)]

    assert await (await app2.start(twice)).result(RESULT) == [False, False]
    assert len(off.calls) == 2


async def test_scripted_and_cassette_models_are_not_cached_by_default(
    store_url: str, tmp_path: Path
) -> None:
    """The bug: the cache was on for a ScriptedModel and outlived the run, in the store, so
    a run after the script was edited got the old answers."""

    def scripted(answer: str) -> ScriptedModel:
        # one name, as the same model has in each new process (or given with name=)
        return ScriptedModel(lambda messages: answer, name="triage-model")

    answers, hits = [], 0
    for script in ("billing", "outage"):  # the script, edited between two runs, one store
        app = keel.App(
            store_url, settings=Settings(poll_interval=0.02), llm=Gateway({"m": scripted(script)})
        )

        @app.workflow
        async def ask(ctx: keel.Context) -> str:
            return await ctx.llm.text("what is the category?")

        try:
            answers.append(await (await app.start(ask)).result(RESULT))
            hits = sum(r.cache_hits for r in await app.store.usage_report("run"))
        finally:
            await app.close()
    assert answers == ["billing", "outage"] and hits == 0

    # a cassette is not cached either (a hit would also keep a recording from being made)
    gw = Gateway({"m": "openai/gpt-4o-mini"}, cassette=Cassette(tmp_path / "c.jsonl", "record"))
    assert not gw._caches(gw.spec("m"))
    assert not Gateway({"m": ScriptedModel(lambda m: "x")})._caches(ModelSpec("keel-scripted/x"))
    # a real model is; and cache=True / cache=False say it for every model
    assert Gateway({"m": "openai/gpt-4o-mini"})._caches(ModelSpec("openai/gpt-4o-mini"))
    forced = Gateway({"m": ScriptedModel(lambda m: "x")}, cache=True)
    assert forced._caches(forced.spec("m"))
    assert not Gateway({"m": "openai/gpt-4o-mini"}, cache=False)._caches(ModelSpec("openai/x"))
    assert Gateway.from_config({"models": {"m": "openai/gpt-4o-mini"}}).cache_enabled is None
    # `cache = true` in [keel.llm] is cache=True
    configured = Gateway.from_config({"models": {"m": "openai/gpt-4o-mini"}, "cache": True})
    assert configured._caches(ModelSpec("keel-scripted/x"))


async def test_cache_entries_expire_after_the_ttl(
    monkeypatch: pytest.MonkeyPatch, llm_app: Callable[..., keel.App]
) -> None:
    clock = Clock(time.time())
    fake = SimpleNamespace(monotonic=time.monotonic, perf_counter=time.perf_counter, time=clock)
    monkeypatch.setattr(gateway_mod, "time", fake)
    monkeypatch.setattr(cache_mod, "time", fake)  # where entries are stored and expire
    model = ScriptedModel(lambda m: "answer")
    app = llm_app(Gateway({"m": model}, cache=True, cache_ttl=60))

    @app.workflow
    async def wf(ctx: keel.Context) -> bool:
        return bool((await ctx.llm.complete(HI)).cache_hit)

    async def run() -> bool:
        return bool(await (await app.start(wf)).result(RESULT))

    assert await run() is False
    clock.now += 59
    assert await run() is True
    clock.now += 2  # 61 s after it was stored
    assert await run() is False
    assert len(model.calls) == 2
    clock.now += 30  # the refreshed entry
    assert await run() is True


async def test_a_replayed_step_is_neither_a_cache_hit_nor_a_cost(
    llm_app: Callable[..., keel.App],
) -> None:
    model = priced(lambda m: "answer")
    app = llm_app(Gateway({"m": model}))

    @app.workflow
    async def wf(ctx: keel.Context) -> list[Any]:
        first = await ctx.llm.complete([{"role": "user", "content": "q"}])
        await ctx.wait_for("go")  # suspends; the resume replays from the top
        second = await ctx.llm.complete([{"role": "user", "content": "q2"}])
        return [first.cache_hit, first.cost_usd, second.cache_hit]

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    before = await usage_rows(app, handle.id)
    assert len(before) == 1 and before[0][8] == 0 and before[0][7] > 0
    await handle.signal("go")
    hit, cost, second_hit = await handle.result(RESULT)
    assert hit is False and cost == before[0][7] and second_hit is False
    assert len(model.calls) == 2  # "q" was not sent again
    after = await usage_rows(app, handle.id)
    assert after[0] == before[0] and len(after) == 2  # replay metered nothing
    (report,) = await app.store.usage_report("run")
    assert report.calls == 2 and report.cache_hits == 0


# -- the journal and metering ----------------------------------------------------------------


async def test_each_call_is_journaled_and_metered(llm_app: Callable[..., keel.App]) -> None:
    model = priced(lambda m: "Paris")
    app = llm_app(Gateway({"fast": ModelSpec(model, params={"temperature": 0})}))

    @app.workflow
    async def geo(ctx: keel.Context, country: str) -> str:
        return await ctx.llm.text(
            f"Capital of {country}?", system="Answer in one word.", max_tokens=5
        )

    handle = await app.start(geo, {"country": "France"}, tenant="acme")
    assert await handle.result(RESULT) == "Paris"
    (rec,) = llm_steps(await app.steps(handle.id))
    assert rec.name == "llm:text" and rec.status is StepStatus.OK
    resp = LLMResponse.model_validate(rec.output)
    assert resp.request["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert resp.request["params"] == {"temperature": 0, "max_tokens": 5}
    assert resp.model == model.model and resp.provider == "keel-scripted"
    assert resp.tried == ["fast"] and resp.content == "Paris" and resp.finish_reason == "stop"
    assert resp.usage.input_tokens > 5 and resp.usage.output_tokens == 1  # counted, not 10/20
    assert resp.cost_usd == pytest.approx(
        resp.usage.input_tokens * 0.15e-6 + resp.usage.output_tokens * 0.6e-6
    )
    assert resp.cache_hit is False and resp.latency_ms > 0
    assert model.calls[0]["params"]["temperature"] == 0

    ((run_id, key, workflow, tenant, m, tin, tout, cost, hit),) = await usage_rows(app)
    assert (run_id, key, workflow, tenant, m) == (handle.id, rec.key, "geo", "acme", model.model)
    assert (tin, tout, hit) == (resp.usage.input_tokens, resp.usage.output_tokens, 0)
    assert cost == pytest.approx(resp.cost_usd)
    (by_tenant,) = await app.store.usage_report("tenant")
    assert by_tenant.key == "acme" and by_tenant.calls == 1
    assert by_tenant.cost_usd == pytest.approx(resp.cost_usd)
    assert await app.store.spent(tenant="acme") == pytest.approx(resp.cost_usd)
    assert await app.store.spent(tenant="globex") == 0.0


async def test_scripted_rules_and_replies(llm_app: Callable[..., keel.App]) -> None:
    import re

    rules = ScriptedModel(
        rules=[("refund", "billing"), (re.compile(r"(?i)\bdown\b"), "outage")],
        default=lambda m: Reply(content="general", input_tokens=7, output_tokens=3),
    )
    gw = Gateway({"r": rules})

    async def ask(text: str) -> LLMResponse:
        return await gw.complete([{"role": "user", "content": text}], CallContext())

    assert (await ask("A REFUND please")).content == "billing"
    assert (await ask("site is Down")).content == "outage"
    other = await ask("hello")
    assert other.content == "general"
    assert (other.usage.input_tokens, other.usage.output_tokens) == (7, 3)
    with pytest.raises(keel.ConfigError, match="needs a function"):
        ScriptedModel()
    strict = ScriptedModel(rules=[("x", "y")])
    with pytest.raises(Exception, match="no rule matches"):
        await Gateway({"s": strict}).complete(HI, CallContext())


# -- import cost -----------------------------------------------------------------------------


def test_import_keel_does_not_import_litellm() -> None:
    code = (
        "import sys, keel, keel.llm\n"
        "keel.App; keel.llm.Gateway; keel.llm.ScriptedModel; keel.llm.Cassette\n"
        "import keel.llm.facade\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_a_scripted_model_keeps_only_its_latest_requests() -> None:
    model = ScriptedModel(lambda m: "ok", keep_calls=3)
    gateway = Gateway({"m": model}, retry=NO_RETRY)
    for i in range(5):
        await gateway.complete(
            [{"role": "user", "content": f"q{i}"}], CallContext("wf", "t"), cache=False
        )
    assert model.total == 5 and len(model.calls) == 3
    assert [c["messages"][0]["content"] for c in model.calls] == ["q2", "q3", "q4"]


async def test_the_first_call_imports_litellm_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from keel.llm import _litellm

    on_loop_thread: list[bool] = []
    real = _litellm.litellm

    def spy() -> Any:
        on_loop_thread.append(threading.current_thread() is threading.main_thread())
        return real()

    monkeypatch.setattr(_litellm, "litellm", spy)
    gateway = Gateway({"m": ScriptedModel(lambda m: "ok")}, retry=NO_RETRY)
    await gateway.complete(HI, CallContext("wf", "t"), cache=False)
    # (a slow import there would stall every run of the process; later calls are cached)
    assert on_loop_thread and on_loop_thread[0] is False
