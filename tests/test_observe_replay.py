"""Replay-aware tracing: a resumed or recovered run continues its trace, and no step
ever gets a second span, whether the run suspended or its worker was SIGKILLed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import keel
from keel.observe import ids
from keel.observe.spans import SpanRow
from keel.types import RunStatus

RESULT = 10.0


def step_keys(spans: list[SpanRow]) -> Counter[str]:
    return Counter(s.attributes["keel.step.key"] for s in spans if "keel.step.key" in s.attributes)


def executions(spans: list[SpanRow]) -> dict[int, SpanRow]:
    out = {s.attributes["keel.execution"]: s for s in spans if "keel.execution" in s.attributes}
    assert len(out) == sum("keel.execution" in s.attributes for s in spans)
    return out


def tool_calls(spans: list[SpanRow]) -> Counter[int | None]:
    """Tool-call spans per parent step span."""
    return Counter(s.parent_id for s in spans if s.name.startswith("execute_tool "))


async def test_resumed_run_has_each_step_once_and_links_its_executions(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    ran: list[str] = []

    @app.tool
    async def work(label: str) -> str:
        ran.append(label)
        return label.upper()

    @app.workflow
    async def approve(ctx: keel.Context, doc: str) -> list[str]:
        first = await ctx.call(work, doc)
        who = await ctx.wait_for("approved")
        second = await ctx.call(work, who)
        return [first, second]

    handle = await app.start(approve, {"doc": "draft"})
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING

    before = await app.trace(handle.id)
    assert step_keys(before) == {"work#0": 1}  # the pending wait has no span yet
    assert [s.parent_id for s in before if s.parent_id is None] == []  # no root until it ends
    [first_exec] = executions(before).values()
    assert first_exec.attributes["keel.run.status"] == "WAITING"

    await handle.signal("approved", "ada")
    assert await handle.result(RESULT) == ["DRAFT", "ADA"]
    assert ran == ["draft", "ada"]
    spans = await app.trace(handle.id)

    # the same trace, continued: what was stored before is still there, unchanged
    assert {s.trace_id for s in spans} == {ids.trace_id(handle.id)}
    assert {s.span_id for s in before} <= {s.span_id for s in spans}
    assert len({s.span_id for s in spans}) == len(spans)
    # every step exactly once, though the resumed execution replayed work#0
    assert step_keys(spans) == {"work#0": 1, "signal:approved#0": 1, "work#1": 1}
    assert set(tool_calls(spans).values()) == {1} and len(tool_calls(spans)) == 2

    execs = executions(spans)
    assert sorted(execs) == [1, 2]
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "invoke_workflow approve"
    assert root.attributes["keel.run.executions"] == 2
    assert all(e.parent_id == root.span_id for e in execs.values())
    assert execs[1].links == []
    assert execs[2].links == [execs[1].span_id]  # the resumed execution links the first
    assert execs[2].attributes["keel.run.resumed"] is True
    assert execs[2].name == "execute approve (resumed)"
    assert execs[1].attributes["keel.run.status"] == "WAITING"
    assert execs[2].attributes["keel.run.status"] == "SUCCEEDED"

    by_key = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == execs[1].span_id  # kept from the first execution
    assert by_key["work#1"].parent_id == execs[2].span_id
    assert by_key["signal:approved#0"].parent_id == execs[2].span_id
    assert by_key["signal:approved#0"].attributes["keel.step.output"] == "ada"


async def test_sigkill_and_resume_leave_each_completed_step_once(worker_harness: Any) -> None:
    h = worker_harness
    module = "tests.apps.observe_app"
    app = h.app(module)
    run_id = "traced-1"
    await app.start("traced", {}, id=run_id, execute=False)

    async def stored() -> list[SpanRow]:
        return await app.trace(run_id)  # this App executes nothing: the store, as written

    async def has_step(key: str) -> bool:
        return key in step_keys(await stored())

    first = h.spawn(module, KEEL_TEST_BLOCK=60)
    await h.wait_ready(first)
    await h.wait_status(app, run_id, "WAITING", procs=[first])
    # the suspension flushed the first execution's spans
    await h.wait_until(lambda: has_step("work#0"), timeout=30, what="spans of execution 1")

    await app.signal(run_id, "go", 1)
    await h.wait_until(
        lambda: (f"{run_id}:block#0", first.pid) in h.executions(),
        timeout=30,
        what="block#0 in flight",
        procs=[first],
    )
    kill = await h.kill(first, app, run_id)
    assert not kill.run_finished
    assert {f"{run_id}:work#0", f"{run_id}:signal:go#0", f"{run_id}:work#1"} <= kill.journaled
    # the killed worker's span buffer died with it: work#1 is journaled, not traced
    lost = await stored()
    assert step_keys(lost) == {"work#0": 1}
    assert sorted(executions(lost)) == [1]

    second = h.spawn(module, KEEL_TEST_BLOCK=0)
    await h.wait_status(app, run_id, "SUCCEEDED", procs=[second])
    info = await app.get_run(run_id)
    assert info.result == [0, 10, 2, 30]

    async def complete() -> bool:
        return any(s.parent_id is None for s in await stored())

    await h.wait_until(complete, timeout=30, what="the root span", procs=[second])
    spans = await stored()

    # each completed step exactly once: replayed ones are not duplicated, lost ones re-emitted
    journaled = {r.key for r in await app.steps(run_id) if r.kind.value != "value" and r.ended_at}
    assert journaled == {"work#0", "signal:go#0", "work#1", "block#0", "work#2"}
    assert step_keys(spans) == dict.fromkeys(journaled, 1)
    assert len({s.span_id for s in spans}) == len(spans)
    calls = tool_calls(spans)
    assert len(calls) == 4 and set(calls.values()) == {1}
    # block#0 ran twice (the kill interrupted it) but was recorded, and traced, once
    assert h.execution_counts()[f"{run_id}:block#0"] == 2

    execs = executions(spans)
    assert sorted(execs) == [1, 3]  # execution 2's own span was lost with its buffer
    assert execs[3].attributes["keel.run.resumed"] is True
    assert execs[3].links == [ids.execution_span_id(run_id, 2)]  # linked to the interrupted
    by_key = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == execs[1].span_id
    for key in ("signal:go#0", "work#1", "block#0", "work#2"):  # re-emitted or new
        assert by_key[key].parent_id == execs[3].span_id, key
        assert by_key[key].status == "OK"
    root = next(s for s in spans if s.parent_id is None)
    assert root.attributes["keel.run.executions"] == 3
    assert {s.trace_id for s in spans} == {ids.trace_id(run_id)}
