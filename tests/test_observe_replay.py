"""Replay-aware tracing: a resumed or recovered run continues its trace, and no step
ever gets a second span, whether the run suspended or its worker was SIGKILLed.

Step spans are built from the journal when a trace is read or exported; the spans
table holds one span per execution that ended and the root of a run that ended.
An execution SIGKILLed mid-run writes no span: the next one to end stores (and
exports) a span reconstructed from the journal, so its steps hang under it and every
link resolves; a read before that makes it on the fly. OTLP receives every span once:
each execution exports the steps that ended since the last export, so the steps of a
SIGKILLed execution go out with the next one, with their execution."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import keel
from keel.observe import ids
from keel.observe.spans import SpanRow
from keel.types import RunStatus
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
WATERMARK = "keel.exported_until_ns"


def step_keys(spans: list[SpanRow]) -> Counter[str]:
    return Counter(s.attributes["keel.step.key"] for s in spans if "keel.step.key" in s.attributes)


def executions(spans: list[SpanRow]) -> dict[int, SpanRow]:
    out = {s.attributes["keel.execution"]: s for s in spans if "keel.execution" in s.attributes}
    assert len(out) == sum("keel.execution" in s.attributes for s in spans)
    return out


def tool_calls(spans: list[SpanRow]) -> Counter[int | None]:
    """Tool-call spans per parent step span."""
    return Counter(s.parent_id for s in spans if s.name.startswith("execute_tool "))


def the_root(spans: list[SpanRow]) -> SpanRow:
    [root] = [s for s in spans if s.parent_id is None]
    return root


def assert_tree(spans: list[SpanRow]) -> None:
    """One root; every parent and every link is a span of the trace; every top-level step
    hangs under an execution span."""
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)
    [root] = [s for s in spans if s.parent_id is None]
    for s in spans:
        assert s is root or s.parent_id in by_id, s.name
        assert all(link in by_id for link in s.links), s.name
        key = s.attributes.get("keel.step.key")
        if key is not None and "/" not in key:
            assert "keel.execution" in by_id[s.parent_id].attributes, key  # type: ignore[index]


async def table(app: keel.App, run_id: str) -> list[SpanRow]:
    """The rows of the spans table for the run (not the trace as read)."""
    rows = await app.store.load_spans(ids.hex_trace(ids.trace_id(run_id)))
    return [SpanRow.from_row(r) for r in rows]


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
    [first_exec] = executions(before).values()
    assert first_exec.attributes["keel.run.status"] == "WAITING"
    # the run has not ended: its root is synthesized on read, open, and not stored
    open_root = the_root(before)
    assert open_root.name == "invoke_workflow approve"
    assert open_root.end_ns is None and open_root.status == "UNSET"
    assert open_root.attributes["keel.run.status"] == "WAITING"
    assert first_exec.parent_id == open_root.span_id
    assert [s.span_id for s in await table(app, handle.id)] == [first_exec.span_id]
    assert await app.trace(handle.id) == before  # reading builds the same trace again

    await handle.signal("approved", "ada")
    assert await handle.result(RESULT) == ["DRAFT", "ADA"]
    assert ran == ["draft", "ada"]
    spans = await app.trace(handle.id)

    # the same trace, continued: the spans read before keep their ids
    assert {s.trace_id for s in spans} == {ids.trace_id(handle.id)}
    assert {s.span_id for s in before} <= {s.span_id for s in spans}
    assert len({s.span_id for s in spans}) == len(spans)
    # every step exactly once, though the resumed execution replayed work#0
    assert step_keys(spans) == {"work#0": 1, "signal:approved#0": 1, "work#1": 1}
    assert set(tool_calls(spans).values()) == {1} and len(tool_calls(spans)) == 2
    assert await app.trace(handle.id) == spans  # and again on every read

    execs = executions(spans)
    assert sorted(execs) == [1, 2]
    root = the_root(spans)
    assert root.name == "invoke_workflow approve"
    assert root.end_ns is not None and root.status == "OK"
    assert root.attributes["keel.run.executions"] == 2
    assert "keel.root.synthesized" not in root.attributes  # stored when the run ended
    assert all(e.parent_id == root.span_id for e in execs.values())
    assert execs[1].links == []
    assert execs[2].links == [execs[1].span_id]  # the resumed execution links the first
    assert execs[2].attributes["keel.run.resumed"] is True
    assert execs[2].name == "execute approve (resumed)"
    assert execs[1].attributes["keel.run.status"] == "WAITING"
    assert execs[2].attributes["keel.run.status"] == "SUCCEEDED"
    # the spans table: the two executions and the root, no step span
    assert sorted(s.span_id for s in await table(app, handle.id)) == sorted(
        [execs[1].span_id, execs[2].span_id, root.span_id]
    )

    by_key = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == execs[1].span_id  # ended during the first execution
    assert by_key["work#1"].parent_id == execs[2].span_id
    assert by_key["signal:approved#0"].parent_id == execs[2].span_id
    assert by_key["signal:approved#0"].attributes["keel.step.output"] == "ada"
    for key in ("work#0", "work#1"):  # inside the window of the execution it hangs under
        step, parent = (
            by_key[key],
            next(e for e in execs.values() if e.span_id == by_key[key].parent_id),
        )
        assert step.end_ns is not None and parent.end_ns is not None
        assert parent.start_ns <= step.end_ns <= parent.end_ns


async def test_sigkill_and_resume_leave_each_completed_step_once(
    worker_harness: Any, otlp_http: Any
) -> None:
    """Workers export to a real OTLP receiver (they inherit its OTEL_* environment)."""
    h = worker_harness
    module = "tests.apps.observe_app"
    app = h.app(module)
    run_id = "traced-1"
    await app.start("traced", {}, id=run_id, execute=False)

    async def read() -> list[SpanRow]:
        return await app.trace(run_id)  # this App executes nothing: built from the store

    async def exported_execution(n: int) -> bool:
        return any(
            s.attributes.get("keel.execution") == n and WATERMARK in s.attributes
            for s in await table(app, run_id)
        )

    def received(pred: Callable[[list[Any]], bool]) -> Any:
        return asyncio.to_thread(otlp_http.wait_for, pred, 30.0)

    first = h.spawn(module, KEEL_TEST_BLOCK=60)
    await h.wait_ready(first)
    await h.wait_status(app, run_id, "WAITING", procs=[first])
    # the suspension ended execution 1: its span is stored once it was exported
    await h.wait_until(lambda: exported_execution(1), timeout=WAIT, what="execution 1 exported")
    batch1 = await received(lambda got: len(got) >= 3)
    assert sorted(r.name for r in batch1) == ["execute traced", "execute_tool work", "work#0"]

    await app.signal(run_id, "go", 1)
    await h.wait_until(
        lambda: (f"{run_id}:block#0", first.pid) in h.executions(),
        timeout=WAIT,
        what="block#0 in flight",
        procs=[first],
    )
    kill = await h.kill(first, app, run_id)
    assert not kill.run_finished
    assert {f"{run_id}:work#0", f"{run_id}:signal:go#0", f"{run_id}:work#1"} <= kill.journaled

    # execution 2 died without writing its span; its journaled steps are in the trace,
    # once, under an open execution 2 (the run is still RUNNING: nobody knows it died)
    lost = await read()
    assert step_keys(lost) == {"work#0": 1, "signal:go#0": 1, "work#1": 1}
    assert_tree(lost)
    assert sorted(executions(lost)) == [1, 2]
    open_exec = executions(lost)[2]
    assert open_exec.end_ns is None and open_exec.status == "UNSET"
    assert open_exec.links == [executions(lost)[1].span_id]
    open_root = the_root(lost)
    assert open_root.end_ns is None and open_root.status == "UNSET"
    by_key = {s.attributes["keel.step.key"]: s for s in lost if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == executions(lost)[1].span_id
    for key in ("signal:go#0", "work#1"):
        assert by_key[key].parent_id == open_exec.span_id, key
    # ... nothing of execution 2 is stored, and nothing was exported
    assert sorted(executions(await table(app, run_id))) == [1]
    assert [sorted(r.name for r in b) for b in otlp_http.batches()] == [
        sorted(r.name for r in batch1)
    ]

    second = h.spawn(module, KEEL_TEST_BLOCK=0)
    await h.wait_status(app, run_id, "SUCCEEDED", procs=[second])
    info = await app.get_run(run_id)
    assert info.result == [0, 10, 2, 30]

    async def complete() -> bool:
        return any(s.parent_id is None for s in await table(app, run_id))

    await h.wait_until(complete, timeout=WAIT, what="the root span", procs=[second])
    spans = await read()

    # each completed step exactly once: replayed ones are not duplicated
    journaled = {r.key for r in await app.steps(run_id) if r.kind.value != "value" and r.ended_at}
    assert journaled == {"work#0", "signal:go#0", "work#1", "block#0", "work#2"}
    assert step_keys(spans) == dict.fromkeys(journaled, 1)
    assert len({s.span_id for s in spans}) == len(spans)
    calls = tool_calls(spans)
    assert len(calls) == 4 and set(calls.values()) == {1}
    # block#0 ran twice (the kill interrupted it) but was recorded, and traced, once
    assert h.execution_counts()[f"{run_id}:block#0"] == 2
    assert await read() == spans

    execs = executions(spans)
    assert sorted(execs) == [1, 2, 3]
    # execution 2 never ended: its span was reconstructed from the journal, stored and
    # exported by execution 3, and covers what it journaled
    died = execs[2]
    assert died.status == "ERROR"
    assert died.status_message == "worker died; reconstructed from the journal"
    assert died.attributes["keel.execution.interrupted"] is True
    assert died.name == "execute traced (resumed)" and died.links == [execs[1].span_id]
    assert execs[3].attributes["keel.run.resumed"] is True
    assert execs[3].links == [ids.execution_span_id(run_id, 2)] == [died.span_id]
    assert "keel.execution.interrupted" not in execs[3].attributes
    root = the_root(spans)
    assert root.span_id == open_root.span_id and root.end_ns is not None
    assert root.attributes["keel.run.executions"] == 3
    assert {s.trace_id for s in spans} == {ids.trace_id(run_id)}
    assert_tree(spans)
    by_key = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == execs[1].span_id
    for key in ("signal:go#0", "work#1"):  # ended in execution 2
        assert by_key[key].parent_id == died.span_id, key
    for key in ("block#0", "work#2"):  # ended in execution 3
        assert by_key[key].parent_id == execs[3].span_id, key
    for s in by_key.values():
        assert s.status == "OK"
    # from the end of execution 1 to the last step execution 2 journaled
    assert died.start_ns == execs[1].end_ns
    assert died.end_ns == by_key["work#1"].end_ns
    assert sorted(executions(await table(app, run_id))) == [1, 2, 3]

    # OTLP: every span of the trace once, the killed execution's steps sent by the next
    # with the execution they hang under
    got = await received(lambda got: len(got) >= len(spans))
    assert sorted(r.span_id for r in got) == sorted(ids.hex_span(s.span_id) for s in spans)
    first_batch, last_batch = otlp_http.batches()
    assert {r.name for r in first_batch} == {r.name for r in batch1}
    assert {r.attributes.get("keel.step.key") for r in last_batch} == {
        None,
        "signal:go#0",
        "work#1",
        "block#0",
        "work#2",
    }
    assert sorted(
        r.attributes.get("keel.execution")
        for r in last_batch
        if r.parent_id == (ids.hex_span(root.span_id))
    ) == [2, 3]
    by_id = {r.span_id: r for r in got}
    for s in spans:  # exported as read: same tree
        r = by_id[ids.hex_span(s.span_id)]
        assert (r.name, r.parent_id, r.status, r.links) == (
            s.name,
            ids.hex_span(s.parent_id) if s.parent_id else None,
            s.status,
            [ids.hex_span(x) for x in s.links],
        )
    assert by_id[ids.hex_span(died.span_id)].attributes["keel.execution.interrupted"] is True
    stored_execs = executions(await table(app, run_id))
    assert {n: e.attributes[WATERMARK] for n, e in stored_execs.items()} == {
        n: e.end_ns for n, e in stored_execs.items()
    }


async def test_trace_read_while_the_run_executes_is_consistent(
    make_app: Callable[..., keel.App],
) -> None:
    """Read mid-execution: the steps done so far hang under the execution in progress,
    which is in the trace (open, like the synthesized root), though nothing is stored."""
    app = make_app()
    gate = asyncio.Event()
    entered = asyncio.Event()

    @app.tool
    async def quick(i: int) -> int:
        return i

    @app.tool
    async def slow(i: int) -> int:
        entered.set()
        await gate.wait()
        return i

    @app.workflow
    async def midway(ctx: keel.Context) -> int:
        a = await ctx.call(quick, 1)
        b = await ctx.call(slow, 2)
        return a + b  # type: ignore[no-any-return]

    handle = await app.start(midway, {})
    await asyncio.wait_for(entered.wait(), RESULT)
    during = await app.trace(handle.id)
    assert step_keys(during) == {"quick#0": 1}  # slow#0 is in flight: not journaled
    [live] = executions(during).values()
    assert live.end_ns is None and live.status == "UNSET"
    root = the_root(during)
    assert root.end_ns is None and root.status == "UNSET"
    span_ids = {s.span_id for s in during}
    assert all(s.parent_id in span_ids for s in during if s is not root)  # no dangling parent
    [quick_span] = [s for s in during if s.attributes.get("keel.step.key") == "quick#0"]
    assert quick_span.parent_id == live.span_id
    assert await table(app, handle.id) == []

    gate.set()
    assert await handle.result(RESULT) == 3
    after = await app.trace(handle.id)
    assert step_keys(after) == {"quick#0": 1, "slow#0": 1}
    [done] = executions(after).values()
    assert done.span_id == live.span_id and done.end_ns is not None
    assert {s.span_id for s in during} <= {s.span_id for s in after}


async def test_executions_killed_in_a_row_are_reconstructed_in_the_local_store(
    worker_harness: Any,
) -> None:
    """No OTLP: two executions SIGKILLed one after the other (the second died replaying,
    before journaling anything). The execution that finishes the run stores spans for
    both; every step hangs under an execution and every link resolves."""
    h = worker_harness
    module = "tests.apps.observe_app"
    app = h.app(module)
    run_id = "traced-2"
    await app.start("traced", {}, id=run_id, execute=False)

    first = h.spawn(module, KEEL_TEST_BLOCK=60)
    await h.wait_ready(first)
    await h.wait_status(app, run_id, "WAITING", procs=[first])
    await app.signal(run_id, "go", 1)

    async def kill_in_block(proc: Any) -> None:
        await h.wait_until(
            lambda: (f"{run_id}:block#0", proc.pid) in h.executions(),
            timeout=WAIT,
            what=f"block#0 in flight in worker {proc.pid}",
            procs=[proc],
        )
        await h.kill(proc, app, run_id)

    await kill_in_block(first)  # execution 2
    await kill_in_block(h.spawn(module, KEEL_TEST_BLOCK=60))  # execution 3, while replaying
    assert h.execution_counts()[f"{run_id}:block#0"] == 2

    third = h.spawn(module, KEEL_TEST_BLOCK=0)
    await h.wait_status(app, run_id, "SUCCEEDED", procs=[third])
    await h.wait_until(
        lambda: table_has_root(app, run_id), timeout=WAIT, what="the root span", procs=[third]
    )
    spans = await app.trace(run_id)
    assert_tree(spans)
    execs = executions(spans)
    assert sorted(execs) == [1, 2, 3, 4]
    assert sorted(executions(await table(app, run_id))) == [1, 2, 3, 4]  # all stored
    for n in (2, 3):
        assert execs[n].status == "ERROR"
        assert execs[n].attributes["keel.execution.interrupted"] is True
        assert execs[n].links == [execs[n - 1].span_id]
    for n in (1, 4):
        assert "keel.execution.interrupted" not in execs[n].attributes
    assert execs[4].links == [execs[3].span_id]
    by_key = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}
    assert by_key["work#0"].parent_id == execs[1].span_id
    # the journal cannot tell executions 2 and 3 apart: the first of them covers what
    # they journaled, the second the time after it up to execution 4
    for key in ("signal:go#0", "work#1"):
        assert by_key[key].parent_id == execs[2].span_id, key
    for key in ("block#0", "work#2"):
        assert by_key[key].parent_id == execs[4].span_id, key
    assert execs[2].end_ns == by_key["work#1"].end_ns
    assert execs[2].end_ns < execs[3].start_ns <= execs[3].end_ns < execs[4].start_ns  # type: ignore[operator]
    assert await app.trace(run_id) == spans


async def table_has_root(app: keel.App, run_id: str) -> bool:
    return any(s.parent_id is None for s in await table(app, run_id))


async def test_an_executions_own_span_replaces_one_reconstructed_for_it(
    make_app: Callable[..., keel.App],
) -> None:
    """The store keeps an execution's own span over a reconstructed one, whichever was
    written first (the next execution may reconstruct it while its write is on its way)."""
    from keel.observe.executions import INTERRUPTED

    app = make_app()
    run_id = "r-1"

    def span(interrupted: bool) -> SpanRow:
        attrs: dict[str, Any] = {"keel.execution": 1, "keel.run.id": run_id}
        if interrupted:
            attrs["keel.execution.interrupted"] = True
        return SpanRow(
            span_id=ids.execution_span_id(run_id, 1),
            trace_id=ids.trace_id(run_id),
            parent_id=ids.step_span_id(run_id, "<run>"),
            run_id=run_id,
            name="execute wf",
            kind="INTERNAL",
            start_ns=1,
            end_ns=5 if interrupted else 9,
            status="ERROR" if interrupted else "OK",
            status_message=INTERRUPTED if interrupted else None,
            attributes=attrs,
        )

    for order in ([True, False], [False, True], [True, True], [False, False]):
        await app.store.purge_spans(2**62)
        for interrupted in order:
            await app.store.write_spans([span(interrupted).row()])
        [kept] = await table(app, run_id)
        assert kept == span(interrupted=not any(not i for i in order)), order


def test_executions_older_than_the_trace_retention_are_not_reconstructed() -> None:
    """Retention purged their spans (and would purge them again): a read or the next
    execution does not make them anew; the later ones, inside retention, are made."""
    from keel.observe.executions import reconstruct
    from keel.types import RunInfo, StepKind, StepRecord, StepStatus

    run = RunInfo(
        id="r-old",
        workflow="wf",
        status=RunStatus.SUCCEEDED,
        input={},
        created_at=10.0,
        updated_at=400.0,
        attempts=3,
    )
    recs = [
        StepRecord(
            run_id=run.id,
            key=f"s#{i}",
            scope="",
            position=i,
            kind=StepKind.TOOL,
            name="s",
            digest="d",
            status=StepStatus.OK,
            started_at=t - 1,
            ended_at=t,
        )
        for i, t in enumerate((50.0, 60.0))
    ]
    third = SpanRow(
        span_id=ids.execution_span_id(run.id, 3),
        trace_id=ids.trace_id(run.id),
        parent_id=None,
        run_id=run.id,
        name="execute wf (resumed)",
        kind="INTERNAL",
        start_ns=300 * 10**9,
        end_ns=400 * 10**9,
        status="OK",
        attributes={"keel.execution": 3},
    )
    # execution 1 journaled both steps (ended at 60 s); execution 2 ran from then to 300 s
    made = reconstruct(run, {3: third}, recs, 2)
    assert [s.attributes["keel.execution"] for s in made] == [1, 2]
    assert made[0].end_ns == 60 * 10**9
    kept = reconstruct(run, {3: third}, recs, 2, cutoff_ns=100 * 10**9)
    assert [s.attributes["keel.execution"] for s in kept] == [2]


async def test_trace_read_mid_map_has_open_spans_for_the_steps_in_flight(
    make_app: Callable[..., keel.App],
) -> None:
    """Map items finished while their map (inside a phase) is still running: the map, the
    phase and its attempt are open in-progress spans, so no span has a missing parent;
    once they end, the same span ids are the finished steps."""
    app = make_app()
    gate = asyncio.Event()
    entered = asyncio.Event()

    @app.tool
    async def item(i: int) -> int:
        if i == 2:
            entered.set()
            await gate.wait()
        return i

    @app.workflow
    async def fan(ctx: keel.Context) -> list[int | None]:
        async with ctx.phase("gather"):
            res = await ctx.map(item, [0, 1, 2])
        return res.values

    handle = await app.start(fan, {})
    await asyncio.wait_for(entered.wait(), RESULT)

    async def two_items_done() -> list[SpanRow]:
        while True:
            spans = await app.trace(handle.id)
            if (
                sum(
                    s.name in ("0", "1") and "map:" in s.attributes.get("keel.step.key", "")
                    for s in spans
                )
                == 2
            ):
                return spans
            await asyncio.sleep(0.01)

    during = await asyncio.wait_for(two_items_done(), RESULT)
    assert_tree(during)
    opened = {
        s.attributes["keel.step.key"]: s
        for s in during
        if s.attributes.get("keel.step.in_progress")
    }
    assert sorted(opened) == ["phase:gather#0", "phase:gather#0/0", "phase:gather#0/0/map:item#0"]
    assert all(s.end_ns is None and s.status == "UNSET" for s in opened.values())

    gate.set()
    assert await handle.result(RESULT) == [0, 1, 2]
    after = await app.trace(handle.id)
    assert_tree(after)
    done = {s.attributes.get("keel.step.key"): s for s in after}
    for key, span in opened.items():
        assert done[key].span_id == span.span_id and done[key].end_ns is not None
        assert "keel.step.in_progress" not in done[key].attributes
