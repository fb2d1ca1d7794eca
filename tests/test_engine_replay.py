"""Replay: completed steps return their recorded outcome; changed code is detected."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

import keel
from keel.types import StepStatus
from tests.limits import WAIT

RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)


class Crash(BaseException):
    """Stands in for a process dying mid-run: user code and the engine cannot catch it."""


class Doc(BaseModel):
    title: str
    pages: int


async def _simulate_crash_recovery(app: keel.App, run_id: str) -> None:
    """After a Crash, the run is RUNNING under a dead worker's lease: close that worker
    and expire its lease, as recovery of a dead worker does."""
    info = await app.get_run(run_id)
    assert info.status is keel.RunStatus.RUNNING
    assert info.lease_owner is not None
    await app.close()
    from keel.store import open_store

    store = open_store(app.store_url)
    try:
        assert await store.expire_owner(info.lease_owner) == 1
    finally:
        await store.close()


async def test_crash_then_restart_does_not_reexecute_completed_steps(
    make_app: Callable[..., keel.App], wait_until: Any
) -> None:
    calls: Counter[str] = Counter()
    crash = {"on": True}

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def fetch(x: int) -> int:
            calls["fetch"] += 1
            return x + 1

        @app.tool
        async def enrich(x: int) -> int:
            calls["enrich"] += 1
            return x * 10

        @app.tool
        async def publish(x: int) -> str:
            calls["publish"] += 1
            if crash["on"]:
                raise Crash()
            return f"published {x}"

        @app.workflow
        async def pipeline(ctx: keel.Context, x: int) -> str:
            a = await ctx.call(fetch, x)
            b = await ctx.call(enrich, a)
            return await ctx.call(publish, b)

        return app, pipeline

    app1, wf1 = build()
    await app1.start(wf1, {"x": 1}, id="run-crash")
    await wait_until(lambda: calls["publish"] == 1, "the crashing step")
    await wait_until(lambda: not app1._worker or not app1._worker.active, "the worker to die")
    await _simulate_crash_recovery(app1, "run-crash")

    crash["on"] = False
    app2, wf2 = build()
    handle = await app2.start(wf2, {"x": 1}, id="run-crash")
    assert handle.id == "run-crash"
    assert await handle.result(RESULT_TIMEOUT) == "published 20"
    # Completed steps ran once; only the step that never finished ran again.
    assert calls == Counter(fetch=1, enrich=1, publish=2)
    steps = await app2.steps("run-crash")
    assert [s.key for s in steps] == ["fetch#0", "enrich#0", "publish#0"]
    assert all(s.status is StepStatus.OK for s in steps)
    runs = await app2.list_runs()
    assert [r.id for r in runs] == ["run-crash"]
    assert runs[0].attempts == 2


async def test_worker_stopped_mid_step_resumes_at_that_step(
    make_app: Callable[..., keel.App], wait_until: Any
) -> None:
    calls: Counter[str] = Counter()
    gate = asyncio.Event()

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def first() -> str:
            calls["first"] += 1
            return "one"

        @app.tool
        async def slow() -> str:
            calls["slow"] += 1
            await gate.wait()
            return "two"

        @app.tool
        async def last(a: str, b: str) -> str:
            calls["last"] += 1
            return f"{a}+{b}"

        @app.workflow
        async def flow(ctx: keel.Context) -> str:
            a = await ctx.call(first)
            b = await ctx.call(slow)
            return await ctx.call(last, a, b)

        return app, flow

    app1, wf1 = build()
    await app1.start(wf1, id="run-stop")
    await wait_until(lambda: calls["slow"] == 1, "the slow step to start")
    await app1.stop_worker()  # graceful stop: the run goes back to the queue
    assert (await app1.get_run("run-stop")).status is keel.RunStatus.PENDING
    await app1.close()

    gate.set()
    app2, wf2 = build()
    handle = await app2.start(wf2, id="run-stop")
    assert await handle.result(RESULT_TIMEOUT) == "one+two"
    assert calls == Counter(first=1, slow=2, last=1)


async def test_recorded_error_reraises_on_replay_without_reexecuting(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()
    branches: list[str] = []

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def flaky(n: int) -> int:
            calls["flaky"] += 1
            raise ValueError(f"bad n={n}")

        @app.tool
        async def fallback(n: int) -> int:
            calls["fallback"] += 1
            return -n

        @app.workflow
        async def recover(ctx: keel.Context, n: int) -> dict[str, Any]:
            try:
                value = await ctx.call(flaky, n)
            except keel.StepError as e:
                assert e.matches(ValueError)
                assert e.matches("ValueError", KeyError)
                assert not e.matches(KeyError)
                branches.append(f"caught {e.error.type}: {e.error.message}")
                value = await ctx.call(fallback, n)
            else:
                branches.append("no error")
            approved = await ctx.wait_for("approve")
            return {"value": value, "approved": approved}

        return app, recover

    app1, wf1 = build()
    h1 = await app1.start(wf1, {"n": 7}, id="run-err")
    assert (await h1.settle(RESULT_TIMEOUT)).status is keel.RunStatus.WAITING
    steps = {s.key: s for s in await app1.steps("run-err")}
    assert steps["flaky#0"].status is StepStatus.ERROR
    assert steps["flaky#0"].error is not None
    assert steps["flaky#0"].error.type == "ValueError"
    assert steps["flaky#0"].error.message == "bad n=7"
    assert steps["flaky#0"].output is None
    await app1.close()

    app2, wf2 = build()
    await app2.signal("run-err", "approve", True)
    h2 = await app2.start(wf2, {"n": 7}, id="run-err")
    assert await h2.result(RESULT_TIMEOUT) == {"value": -7, "approved": True}
    assert calls == Counter(flaky=1, fallback=1)
    # The same branch was taken live and on replay, with the same recorded error.
    assert branches == ["caught ValueError: bad n=7"] * 2


async def _run_v1_until_waiting(app: keel.App, wf: Any, run_id: str, inp: Any = None) -> None:
    handle = await app.start(wf, inp, id=run_id)
    info = await handle.settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING, info
    await app.close()


async def test_reordered_steps_fail_with_nondeterminism_naming_both(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()

    def tools(app: keel.App) -> tuple[Any, Any]:
        @app.tool
        async def alpha() -> str:
            calls["alpha"] += 1
            return "a"

        @app.tool
        async def beta() -> str:
            calls["beta"] += 1
            return "b"

        return alpha, beta

    app1 = make_app()
    alpha, beta = tools(app1)

    @app1.workflow(name="ordered")
    async def v1(ctx: keel.Context) -> str:
        a = await ctx.call(alpha)
        b = await ctx.call(beta)
        await ctx.wait_for("go")
        return a + b

    await _run_v1_until_waiting(app1, v1, "run-nd")
    assert calls == Counter(alpha=1, beta=1)

    app2 = make_app()
    alpha2, beta2 = tools(app2)

    @app2.workflow(name="ordered")
    async def v2(ctx: keel.Context) -> str:
        b = await ctx.call(beta2)  # swapped
        a = await ctx.call(alpha2)
        await ctx.wait_for("go")
        return a + b

    await app2.signal("run-nd", "go")
    handle = await app2.start(v2, id="run-nd")
    try:
        await handle.result(RESULT_TIMEOUT)
        raise AssertionError("the changed workflow must not replay silently")
    except keel.RunFailed as e:
        assert e.error is not None
        assert e.error.type == "NonDeterminismError"
        assert "alpha#0" in e.error.message and "beta#0" in e.error.message
        assert e.error.data["recorded"] == "alpha#0"
        assert e.error.data["new"] == "beta#0"
    info = await app2.get_run("run-nd")
    assert info.status is keel.RunStatus.FAILED
    assert calls == Counter(alpha=1, beta=1)  # v2 executed nothing


async def test_changed_arguments_at_same_position_are_detected(
    make_app: Callable[..., keel.App],
) -> None:
    calls: list[int] = []

    def tools(app: keel.App) -> Any:
        @app.tool
        async def charge(amount: int) -> int:
            calls.append(amount)
            return amount

        return charge

    app1 = make_app()
    charge = tools(app1)

    @app1.workflow(name="billing")
    async def v1(ctx: keel.Context) -> int:
        paid = await ctx.call(charge, 100)
        await ctx.wait_for("go")
        return paid

    await _run_v1_until_waiting(app1, v1, "run-args")

    app2 = make_app()
    charge2 = tools(app2)

    @app2.workflow(name="billing")
    async def v2(ctx: keel.Context) -> int:
        try:
            paid = await ctx.call(charge2, 250)  # same step, new argument
        except keel.KeelError:
            return -1  # swallowing it must not hide the divergence
        await ctx.wait_for("go")
        return paid

    await app2.signal("run-args", "go")
    handle = await app2.start(v2, id="run-args")
    try:
        await handle.result(RESULT_TIMEOUT)
        raise AssertionError("changed arguments must not replay the old result")
    except keel.RunFailed as e:
        assert e.error is not None
        assert e.error.type == "NonDeterminismError"
        assert "charge#0" in e.error.message
        assert e.error.data["recorded_digest"] != e.error.data["new_digest"]
    assert calls == [100]


async def test_added_step_before_recorded_ones_is_detected(
    make_app: Callable[..., keel.App],
) -> None:
    app1 = make_app()

    @app1.tool
    async def step_a() -> int:
        return 1

    @app1.workflow(name="grow")
    async def v1(ctx: keel.Context) -> int:
        x = await ctx.call(step_a)
        await ctx.wait_for("go")
        return x

    await _run_v1_until_waiting(app1, v1, "run-grow")

    app2 = make_app()
    a2 = app2.tool(step_a.__wrapped__, name="step_a")

    @app2.tool
    async def audit() -> None:
        return None

    @app2.workflow(name="grow")
    async def v2(ctx: keel.Context) -> int:
        await ctx.call(audit)  # a new step where step_a#0 was recorded
        x: int = await ctx.call(a2)
        await ctx.wait_for("go")
        return x

    await app2.signal("run-grow", "go")
    info = await (await app2.start(v2, id="run-grow")).settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.FAILED
    assert info.error is not None and info.error.type == "NonDeterminismError"
    assert "audit#0" in info.error.message and "step_a#0" in info.error.message


async def test_now_uuid_random_are_stable_across_replay(
    make_app: Callable[..., keel.App],
) -> None:
    seen: list[tuple[Any, ...]] = []

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.workflow
        async def stamps(ctx: keel.Context) -> list[Any]:
            values = (ctx.now(), ctx.uuid(), ctx.random(), ctx.uuid())
            seen.append(values)
            await ctx.wait_for("go")
            return [values[0].isoformat(), values[1], values[2], values[3]]

        return app, stamps

    app1, wf1 = build()
    await _run_v1_until_waiting(app1, wf1, "run-values")
    app2, wf2 = build()
    await app2.signal("run-values", "go")
    result = await (await app2.start(wf2, id="run-values")).result(RESULT_TIMEOUT)
    assert len(seen) == 2
    assert seen[0] == seen[1]
    now, u1, r, u2 = seen[0]
    assert now.tzinfo is not None
    assert u1 != u2 and len(u1) == 36
    assert 0 <= r < 1
    assert result == [now.isoformat(), u1, r, u2]


async def test_pydantic_outputs_round_trip_typed_live_and_on_replay(
    make_app: Callable[..., keel.App],
) -> None:
    types_seen: list[tuple[type, type, type]] = []
    calls: Counter[str] = Counter()

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def load(title: str) -> Doc:
            calls["load"] += 1
            return Doc(title=title, pages=3)

        @app.tool
        async def load_many(n: int) -> list[Doc]:
            calls["load_many"] += 1
            return [Doc(title=f"d{i}", pages=i) for i in range(n)]

        @app.workflow
        async def typed(ctx: keel.Context, title: str) -> Doc:
            doc = await ctx.call(load, title)
            docs = await ctx.call(load_many, 2)
            types_seen.append((type(doc), type(docs), type(docs[1])))
            await ctx.wait_for("go")
            return Doc(title=doc.title.upper(), pages=doc.pages + sum(d.pages for d in docs))

        return app, typed

    app1, wf1 = build()
    await _run_v1_until_waiting(app1, wf1, "run-typed", {"title": "memo"})
    app2, wf2 = build()
    await app2.signal("run-typed", "go")
    result = await (await app2.start(wf2, {"title": "memo"}, id="run-typed")).result(RESULT_TIMEOUT)
    assert types_seen == [(Doc, list, Doc), (Doc, list, Doc)]
    assert calls == Counter(load=1, load_many=1)
    assert result == Doc(title="MEMO", pages=4)  # the workflow's return is revived too


async def test_large_outputs_are_stored_out_of_line_and_replay(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()
    big = "x" * 5000

    def build() -> tuple[keel.App, Any]:
        app = make_app(large_output_bytes=1024)

        @app.tool
        async def produce() -> dict[str, Any]:
            calls["produce"] += 1
            return {"body": big, "n": 1}

        @app.tool
        async def small() -> str:
            calls["small"] += 1
            return "tiny"

        @app.workflow
        async def bulky(ctx: keel.Context) -> int:
            out = await ctx.call(produce)
            s = await ctx.call(small)
            await ctx.wait_for("go")
            return len(out["body"]) + out["n"] + len(s)

        return app, bulky

    app1, wf1 = build()
    await _run_v1_until_waiting(app1, wf1, "run-big")
    app2, wf2 = build()
    steps = {s.key: s for s in await app2.steps("run-big")}
    assert steps["produce#0"].blob is not None
    assert steps["produce#0"].output is None  # not inline in the journal row
    assert steps["small#0"].blob is None
    assert steps["small#0"].output == "tiny"
    await app2.signal("run-big", "go")
    assert await (await app2.start(wf2, id="run-big")).result(RESULT_TIMEOUT) == 5005
    assert calls == Counter(produce=1, small=1)


async def test_replay_emits_replayed_hooks_not_started(
    make_app: Callable[..., keel.App],
) -> None:
    events: list[tuple[str, str]] = []

    class Recorder(keel.Hooks):
        def step_started(self, ev: keel.StepEvent) -> None:
            events.append(("started", ev.key))

        def step_replayed(self, ev: keel.StepEvent) -> None:
            events.append(("replayed", ev.key))

    def build() -> tuple[keel.App, Any]:
        app = make_app()
        app.hooks.add(Recorder())

        @app.tool
        async def one() -> int:
            return 1

        @app.workflow
        async def hooked(ctx: keel.Context) -> int:
            x: int = await ctx.call(one)
            await ctx.wait_for("go")
            return x

        return app, hooked

    app1, wf1 = build()
    await _run_v1_until_waiting(app1, wf1, "run-hooks")
    assert events == [("started", "one#0")]
    events.clear()
    app2, wf2 = build()
    await app2.signal("run-hooks", "go")
    assert await (await app2.start(wf2, id="run-hooks")).result(RESULT_TIMEOUT) == 1
    assert ("replayed", "one#0") in events
    assert ("started", "one#0") not in events


async def test_models_defined_in_a_function_resolve_under_postponed_annotations(
    make_app: Callable[..., keel.App],
) -> None:
    # This module uses `from __future__ import annotations`: the annotations below are
    # strings naming classes local to this function, resolved where they were decorated.
    class Invoice(BaseModel):
        number: str
        total: float

    class Order(BaseModel):
        id: int

    app = make_app()
    live: list[type] = []

    @app.tool
    async def bill(order: Order) -> Invoice:
        return Invoice(number=f"INV-{order.id}", total=9.5)

    @app.workflow
    async def checkout(ctx: keel.Context, order: Order) -> Invoice:
        live.append(type(order))
        invoice = await ctx.call(bill, order)
        live.append(type(invoice))
        return invoice  # type: ignore[no-any-return]

    handle = await app.start(checkout, {"order": {"id": 4}})
    assert await handle.result(RESULT_TIMEOUT) == Invoice(number="INV-4", total=9.5)
    assert live == [Order, Invoice]
