"""Scatter-gather: ctx.map and ctx.gather, their ordering, limits and completion policies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import keel
from keel.types import StepKind, StepStatus
from tests.limits import WAIT

RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)


class Crash(BaseException):
    """Stands in for a process dying mid-run."""


async def _run(app: keel.App, wf: Any, inp: Any = None, run_id: str | None = None) -> Any:
    handle = await app.start(wf, inp, id=run_id)
    return await handle.result(RESULT_TIMEOUT)


async def test_results_in_input_order_when_items_finish_out_of_order(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    n = 6
    done = [asyncio.Event() for _ in range(n)]
    finished: list[int] = []

    @app.tool
    async def work(i: int) -> str:
        if i + 1 < n:  # each item waits for the next one: they finish in reverse order
            await done[i + 1].wait()
        finished.append(i)
        done[i].set()
        return f"r{i}"

    @app.workflow
    async def fan(ctx: keel.Context, items: list[int]) -> list[Any]:
        res = await ctx.map(work, items)
        assert isinstance(res, keel.MapResult)
        return list(res.values)

    assert await _run(app, fan, {"items": list(range(n))}) == [f"r{i}" for i in range(n)]
    assert finished == list(reversed(range(n)))


@pytest.mark.parametrize("use_fn", [False, True], ids=["tool", "fn"])
async def test_concurrency_limit_is_never_exceeded(
    make_app: Callable[..., keel.App], use_fn: bool
) -> None:
    app = make_app()
    in_flight = 0
    peak = 0

    @app.tool
    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return i * i

    async def child(ctx: keel.Context, i: int) -> int:
        out: int = await ctx.call(work, i)
        return out

    @app.workflow
    async def limited(ctx: keel.Context, n: int) -> list[Any]:
        res = await ctx.map(child if use_fn else work, range(n), concurrency=3)
        return list(res)

    assert await _run(app, limited, {"n": 10}) == [i * i for i in range(10)]
    assert peak == 3  # parallel, but never more than the limit


async def test_partial_failure_under_all_fails_the_run(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def check(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd item {i}")
        return i

    @app.workflow
    async def strict(ctx: keel.Context) -> list[Any]:
        return list(await ctx.map(check, range(4)))

    handle = await app.start(strict)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT_TIMEOUT)
    err = info.value.error
    assert err is not None
    assert err.type == "MapFailed"
    assert "2 of 4 items failed" in err.message
    assert "item 1: ValueError: odd item 1" in err.message
    assert err.data["failed"] == [1, 3]
    assert (await handle.status()) is keel.RunStatus.FAILED


async def test_map_failed_carries_the_result_when_caught(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def check(i: int) -> int:
        if i in (1, 3):
            raise ValueError(f"bad {i}")
        return i * 10

    @app.workflow
    async def tolerant(ctx: keel.Context) -> dict[str, Any]:
        try:
            await ctx.map(check, range(5), require=keel.All())
        except keel.MapFailed as e:
            res = e.result  # type: ignore[attr-defined]
            return {
                "ok": res.ok,
                "values": list(res.values),
                "failed": [(f.index, f.error.type, f.error.message) for f in res.failed],
                "succeeded": res.succeeded,
            }
        raise AssertionError("MapFailed expected")

    assert await _run(app, tolerant) == {
        "ok": [0, 20, 40],
        "values": [0, None, 20, None, 40],
        "failed": [[1, "ValueError", "bad 1"], [3, "ValueError", "bad 3"]],
        "succeeded": 3,
    }


@pytest.mark.parametrize(
    ("policy", "passes"),
    [
        (keel.AtLeast(4), True),
        (keel.AtLeast(5), False),
        (keel.AtLeast(0.8), True),
        (keel.AtLeast(0.9), False),
        (keel.BestEffort(), True),
        (keel.All(), False),
    ],
    ids=["n4-pass", "n5-fail", "0.8-pass", "0.9-fail", "best-effort", "all"],
)
async def test_completion_policies(
    make_app: Callable[..., keel.App], policy: Any, passes: bool
) -> None:
    app = make_app()

    @app.tool
    async def item(i: int) -> int:
        if i == 2:
            raise RuntimeError("boom")
        return i

    @app.workflow
    async def policed(ctx: keel.Context) -> dict[str, Any]:
        try:
            res = await ctx.map(item, range(5), require=policy)
        except keel.MapFailed as e:
            return {"raised": True, "required": e.required, "ok": e.result.ok}  # type: ignore[attr-defined]
        return {"raised": False, "ok": res.ok, "failed": [f.index for f in res.failed]}

    out = await _run(app, policed)
    if passes:
        assert out == {"raised": False, "ok": [0, 1, 3, 4], "failed": [2]}
    else:
        assert out["raised"] is True
        assert out["required"] == 5
        assert out["ok"] == [0, 1, 3, 4]


def test_at_least_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        keel.AtLeast(1.5)
    with pytest.raises(ValueError):
        keel.AtLeast(-1)
    with pytest.raises(TypeError):
        keel.AtLeast(True)


async def test_best_effort_never_raises_and_reports_structured_failures(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def always_fails(i: int) -> int:
        raise KeyError(f"missing {i}")

    @app.workflow
    async def lenient(ctx: keel.Context) -> dict[str, Any]:
        res = await ctx.map(always_fails, ["a", "b", "c"], require=keel.BestEffort())
        return {
            "ok": res.ok,
            "values": list(res.values),
            "failed": [f.model_dump(exclude_none=True) for f in res.failed],
        }

    out = await _run(app, lenient)
    assert out["ok"] == []
    assert out["values"] == [None, None, None]
    assert [f["index"] for f in out["failed"]] == [0, 1, 2]
    first = out["failed"][0]["error"]
    assert first["type"] == "KeyError"
    assert "missing a" in first["message"]
    assert "LookupError" in first["types"]
    assert first["step"] == "map:always_fails#0/0"


async def test_fn_children_run_nested_steps_in_their_own_branch(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def fetch(doc: str) -> str:
        return f"text of {doc}"

    @app.tool
    async def summarise(text: str) -> str:
        return text.upper()

    async def per_doc(ctx: keel.Context, doc: str) -> dict[str, str]:
        text = await ctx.call(fetch, doc)
        return {"doc": doc, "summary": await ctx.call(summarise, text)}

    @app.workflow
    async def summarise_all(ctx: keel.Context, docs: list[str]) -> list[Any]:
        res = await ctx.map(per_doc, docs, concurrency=2, name="docs")
        return res.ok

    handle = await app.start(summarise_all, {"docs": ["a", "b", "c"]})
    assert await handle.result(RESULT_TIMEOUT) == [
        {"doc": d, "summary": f"TEXT OF {d.upper()}"} for d in "abc"
    ]
    steps = {s.key: s for s in await app.steps(handle.id)}
    for i in range(3):
        assert steps[f"map:docs#0/{i}"].kind is StepKind.CHILD
        assert steps[f"map:docs#0/{i}/fetch#0"].kind is StepKind.TOOL
        assert steps[f"map:docs#0/{i}/summarise#0"].status is StepStatus.OK
    assert steps["map:docs#0"].kind is StepKind.MAP


async def test_map_of_nothing_is_empty(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def never(i: int) -> int:
        raise AssertionError("not called")

    @app.workflow
    async def empty(ctx: keel.Context) -> dict[str, Any]:
        res = await ctx.map(never, [])
        return {"values": list(res), "ok": res.ok, "n": len(res)}

    assert await _run(app, empty) == {"values": [], "ok": [], "n": 0}


async def test_completed_items_never_rerun_after_crash(
    make_app: Callable[..., keel.App], wait_until: Any
) -> None:
    calls: Counter[int] = Counter()
    crash = {"on": True}

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def process(i: int) -> int:
            calls[i] += 1
            if i == 3 and crash["on"]:
                raise Crash()
            return i + 100

        @app.workflow
        async def batch(ctx: keel.Context) -> list[Any]:
            res = await ctx.map(process, range(5), concurrency=1)
            return list(res)

        return app, batch

    app1, wf1 = build()
    await app1.start(wf1, id="run-map-crash")
    await wait_until(lambda: calls[3] == 1, "the crashing item")
    await wait_until(lambda: not app1._worker or not app1._worker.active, "the worker to die")
    info = await app1.get_run("run-map-crash")
    assert info.status is keel.RunStatus.RUNNING and info.lease_owner
    await app1.close()
    await app1.store.expire_owner(info.lease_owner)
    await app1.close()

    crash["on"] = False
    app2, wf2 = build()
    result = await (await app2.start(wf2, id="run-map-crash")).result(RESULT_TIMEOUT)
    assert result == [100, 101, 102, 103, 104]
    assert calls == Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 1})


async def test_suspended_item_resumes_without_rerunning_finished_items(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def prepare(i: int) -> int:
            calls[f"prepare{i}"] += 1
            return i

        async def item(ctx: keel.Context, i: int) -> str:
            v = await ctx.call(prepare, i)
            if i == 1:
                ok = await ctx.wait_for("review")
                return f"{v}:{ok}"
            return f"{v}"

        @app.workflow
        async def reviewed(ctx: keel.Context) -> list[Any]:
            return list(await ctx.map(item, range(3), concurrency=3))

        return app, reviewed

    app1, wf1 = build()
    info = await (await app1.start(wf1, id="run-map-wait")).settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert info.waiting_on == ["review"]
    assert calls == Counter(prepare0=1, prepare1=1, prepare2=1)
    await app1.close()

    app2, wf2 = build()
    await app2.signal("run-map-wait", "review", "yes")
    result = await (await app2.start(wf2, id="run-map-wait")).result(RESULT_TIMEOUT)
    assert result == ["0", "1:yes", "2"]
    assert calls == Counter(prepare0=1, prepare1=1, prepare2=1)


async def test_gather_heterogeneous_calls_in_order_and_unpacks(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def account(account_id: int) -> dict[str, Any]:
            calls["account"] += 1
            await release.wait()  # finishes after history
            return {"id": account_id, "tier": "gold"}

        @app.tool
        async def history(account_id: int, limit: int = 2) -> list[str]:
            calls["history"] += 1
            release.set()
            return [f"t{i}" for i in range(limit)]

        @app.workflow
        async def profile(ctx: keel.Context, account_id: int) -> dict[str, Any]:
            acct, hist = await ctx.gather(
                ctx.call(account, account_id), ctx.call(history, account_id, limit=3)
            )
            await ctx.wait_for("go")
            return {"tier": acct["tier"], "history": hist}

        return app, profile

    app1, wf1 = build()
    h1 = await app1.start(wf1, {"account_id": 9}, id="run-gather")
    assert (await h1.settle(RESULT_TIMEOUT)).status is keel.RunStatus.WAITING
    keys = {s.key for s in await app1.steps("run-gather")}
    assert {"gather#0", "gather#0/0", "gather#0/1", "gather#0/0/account#0"} <= keys
    assert "gather#0/1/history#0" in keys
    await app1.close()

    app2, wf2 = build()
    await app2.signal("run-gather", "go")
    out = await (await app2.start(wf2, {"account_id": 9}, id="run-gather")).result(RESULT_TIMEOUT)
    assert out == {"tier": "gold", "history": ["t0", "t1", "t2"]}
    assert calls == Counter(account=1, history=1)


async def test_gather_failure_policy(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def good() -> str:
        return "fine"

    @app.tool
    async def bad() -> str:
        raise ValueError("nope")

    @app.workflow
    async def both(ctx: keel.Context) -> dict[str, Any]:
        lenient = await ctx.gather(ctx.call(good), ctx.call(bad), require=keel.BestEffort())
        try:
            await ctx.gather(ctx.call(good), ctx.call(bad))
        except keel.MapFailed as e:
            strict = [f.index for f in e.result.failed]  # type: ignore[attr-defined]
        return {
            "values": list(lenient),
            "failed": [(f.index, f.error.type) for f in lenient.failed],
            "strict_failed": strict,
        }

    assert await _run(app, both) == {
        "values": ["fine", None],
        "failed": [[1, "ValueError"]],
        "strict_failed": [1],
    }


async def test_nested_map_and_waiting_gather_branch_resume_without_rerunning(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[int] = Counter()

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        def square(i: int) -> int:  # a sync tool runs in a thread, still one step
            calls[i] += 1
            return i * i

        async def inner(ctx: keel.Context, i: int) -> list[Any]:
            return list(await ctx.map(square, [i, i + 10], concurrency=2))

        async def approval(ctx: keel.Context) -> Any:
            return await ctx.wait_for("go")

        @app.workflow
        async def outer(ctx: keel.Context) -> list[Any]:
            res = await ctx.map(inner, range(3), concurrency=2, name="rows")
            sq, decision = await ctx.gather(ctx.call(square, 7), approval(ctx))
            return [list(res), sq, decision]

        return app, outer

    app1, wf1 = build()
    info = await (await app1.start(wf1, id="run-nested")).settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    await app1.close()
    app2, wf2 = build()
    await app2.signal("run-nested", "go", "approved")
    out = await (await app2.start(wf2, id="run-nested")).result(RESULT_TIMEOUT)
    assert out == [[[0, 100], [1, 121], [4, 144]], 49, "approved"]
    assert calls == Counter({i: 1 for i in (0, 10, 1, 11, 2, 12, 7)})
    keys = {s.key for s in await app2.steps("run-nested")}
    assert "map:rows#0/2/map:square#0/1" in keys
    assert "gather#0/1/signal:go#0" in keys
