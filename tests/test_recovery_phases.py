"""Phases: checkpoint validators, re-runs in fresh journal branches, escalation, replay.

The blast radius of a semantic failure is one phase: earlier phases' journal
entries and state stay as they were, a re-run starts from the state the phase
started with, and replay never re-executes a failed attempt's steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.types import RunStatus, StepKind, StepStatus
from tests.faults import Always, Calls, Faults, Schedule
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)


class Doc(BaseModel):
    source: str = ""
    figures: list[int] = []
    total: int = 0
    summary: str = ""
    notes: list[str] = []


def totals_add_up(s: Doc) -> str | None:
    if sum(s.figures) != s.total:
        return f"figures sum to {sum(s.figures)}, not the stated total {s.total}"
    return None


def has_summary(s: Doc) -> list[str]:
    return [] if s.summary else ["summary is empty"]


def _by_key(steps: list[keel.StepRecord]) -> dict[str, keel.StepRecord]:
    return {s.key: s for s in steps}


async def test_failing_checkpoint_leaves_earlier_phases_intact(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    fetch = faults.tool(app, "fetch", Schedule())
    extract = faults.tool(app, "extract", Schedule(), result=lambda text: [1, 2, 3])
    summarise = faults.tool(app, "summarise", Schedule(), result=lambda text: "")

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        async with ctx.phase("read"):
            ctx.state.source = await ctx.call(fetch, "doc-1")
        async with ctx.phase("extract", check=totals_add_up):
            ctx.state.figures = await ctx.call(extract, ctx.state.source)
            ctx.state.total = 6
        try:
            async with ctx.phase("summarise", check=[has_summary, totals_add_up]):
                ctx.state.summary = await ctx.call(summarise, ctx.state.source)
        except keel.CheckpointFailed as exc:
            return {"state": ctx.state.model_dump(), "error": exc.to_structured().model_dump()}
        return {"state": ctx.state.model_dump()}

    handle = await app.start(wf)
    out = await handle.result(RESULT)
    # the state the earlier phases produced is intact
    assert out["state"]["source"] == "doc-1"
    assert out["state"]["figures"] == [1, 2, 3] and out["state"]["total"] == 6
    err = out["error"]
    assert err["type"] == "CheckpointFailed"
    assert err["data"]["phase"] == "summarise"
    assert err["data"]["messages"] == ["summary is empty"]
    assert err["step"] == "phase:summarise#0"
    assert "summary is empty" in err["message"]

    steps = _by_key(await app.steps(handle.id))
    assert steps["phase:read#0"].status is StepStatus.OK
    assert steps["phase:extract#0"].status is StepStatus.OK
    assert steps["phase:read#0/0/fetch#0"].status is StepStatus.OK
    assert steps["phase:read#0/0/fetch#0"].output == "doc-1"
    assert steps["phase:extract#0/0/extract#0"].output == [1, 2, 3]
    assert steps["phase:summarise#0"].status is StepStatus.ERROR
    outcome = steps["phase:summarise#0/0"]
    assert outcome.kind is StepKind.PHASE and outcome.status is StepStatus.ERROR
    assert outcome.error is not None and outcome.error.data["messages"] == ["summary is empty"]
    # every tool ran exactly once
    assert faults.per_key() == {
        "phase:read#0/0/fetch#0": 1,
        "phase:extract#0/0/extract#0": 1,
        "phase:summarise#0/0/summarise#0": 1,
    }
    info = await app.get_run(handle.id)
    assert info.state is not None and info.state["source"] == "doc-1"
    assert info.state["figures"] == [1, 2, 3]


async def test_an_uncaught_checkpoint_failure_fails_the_run(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> None:
        async with ctx.phase("extract", check=totals_add_up):
            ctx.state.figures = [1, 2]
            ctx.state.total = 5

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "CheckpointFailed"
    assert err.data["phase"] == "extract"
    assert err.data["messages"] == ["figures sum to 3, not the stated total 5"]
    assert err.step == "phase:extract#0"
    assert (await app.get_run(handle.id)).error == err


async def test_retries_rerun_the_phase_in_fresh_branches_from_the_start_state(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    # attempt n of the phase extracts these figures; only the third adds up to 6
    answers = iter([[1, 1], [2, 2, 2, 2], [1, 2, 3]])
    extract = faults.tool(app, "extract", Schedule(), result=lambda text: next(answers))
    entered: list[dict[str, Any]] = []

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> list[int]:
        ctx.state.total = 6
        ctx.state.notes = ["before"]
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
            async with attempt:
                entered.append(ctx.state.model_dump())
                ctx.state.notes = [*ctx.state.notes, f"attempt {attempt.number}"]
                ctx.state.figures = await ctx.call(extract, "doc")
        return ctx.state.figures

    handle = await app.start(wf)
    assert await handle.result(RESULT) == [1, 2, 3]
    # every attempt started from the state the phase started with
    start = {"source": "", "figures": [], "total": 6, "summary": "", "notes": ["before"]}
    assert entered == [start, start, start]
    info = await app.get_run(handle.id)
    assert info.state is not None and info.state["notes"] == ["before", "attempt 2"]
    steps = _by_key(await app.steps(handle.id))
    # each attempt's steps live in their own branch
    for n in range(3):
        assert f"phase:extract#0/{n}/extract#0" in steps
    assert faults.count("extract") == 3
    assert steps["phase:extract#0/0"].status is StepStatus.ERROR
    assert steps["phase:extract#0/1"].status is StepStatus.ERROR
    assert steps["phase:extract#0/2"].status is StepStatus.OK
    err0 = steps["phase:extract#0/0"].error
    assert err0 is not None
    assert err0.data["messages"] == ["figures sum to 2, not the stated total 6"]
    final = steps["phase:extract#0"]
    assert final.status is StepStatus.OK and final.attempts == 3


async def test_retries_exhausted_raise_checkpoint_failed(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    runs = 0

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> None:
        nonlocal runs
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=1):
            async with attempt:
                runs += 1
                ctx.state.total = 1

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert runs == 2
    err = info.value.error
    assert err is not None and err.type == "CheckpointFailed"
    assert "failed after 2 attempt(s)" in err.message
    assert err.data["phase"] == "extract" and err.step == "phase:extract#0"
    assert err.data["messages"] == ["figures sum to 0, not the stated total 1"]
    steps = _by_key(await app.steps(handle.id))
    assert steps["phase:extract#0"].status is StepStatus.ERROR
    assert steps["phase:extract#0"].attempts == 2


async def test_a_failing_step_fails_only_its_phase_attempt(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Calls("404"))  # not retryable: fails the attempt

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> str:
        async for attempt in ctx.phase("work", retries=1):
            async with attempt:
                ctx.state.summary = await ctx.call(flaky, "done")
        return ctx.state.summary

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "done"
    steps = _by_key(await app.steps(handle.id))
    err = steps["phase:work#0/0"].error
    assert err is not None and err.data["messages"][0].startswith("StepError")
    assert steps["phase:work#0/0/flaky#0"].status is StepStatus.ERROR
    assert steps["phase:work#0/1/flaky#0"].status is StepStatus.OK

    # with no retries left, the step's own error is the one the workflow sees
    app2_faults = Faults()
    broken = app2_faults.tool(app, "broken", Always("404"))

    @app.workflow(state=Doc)
    async def wf2(ctx: keel.Context) -> str:
        async with ctx.phase("work"):
            await ctx.call(broken, 1)
        return "unreachable"

    h2 = await app.start(wf2)
    with pytest.raises(keel.RunFailed) as info:
        await h2.result(RESULT)
    assert info.value.error is not None and info.value.error.type == "HTTPStatusError"
    assert _by_key(await app.steps(h2.id))["phase:work#0"].status is StepStatus.ERROR


async def test_phase_configuration_errors(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    body_ran = False

    @app.workflow
    async def wf(ctx: keel.Context) -> None:
        nonlocal body_ran
        async with ctx.phase("p", retries=1):
            body_ran = True

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "ConfigError"
    assert "retries=1" in err.message and "async for attempt in ctx.phase" in err.message
    assert not body_ran

    @app.workflow
    async def neg(ctx: keel.Context) -> None:
        ctx.phase("p", retries=-1)

    @app.workflow
    async def bad_on_fail(ctx: keel.Context) -> None:
        ctx.phase("p", on_fail="retry")

    @app.workflow
    async def bad_check(ctx: keel.Context) -> None:
        ctx.phase("p", check=[42])

    for wf_, fragment in ((neg, "retries must be >= 0"), (bad_on_fail, "on_fail must be")):
        with pytest.raises(keel.RunFailed) as info:
            await (await app.start(wf_)).result(RESULT)
        assert info.value.error is not None and fragment in info.value.error.message
    with pytest.raises(keel.RunFailed) as info:
        await (await app.start(bad_check)).result(RESULT)
    assert info.value.error is not None and "validate= takes types" in info.value.error.message


async def test_async_and_raising_checks(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    async def remote_review(s: Doc) -> list[str]:
        await asyncio.sleep(0)
        return ["reviewer: too short"] if len(s.summary) < 5 else []

    def crashes(s: Doc) -> None:
        raise RuntimeError("checker bug")

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> list[str]:
        try:
            async with ctx.phase("write", check=[remote_review, crashes]):
                ctx.state.summary = "ok"
        except keel.CheckpointFailed as exc:
            return list(exc.data["messages"])
        return []

    assert await (await app.start(wf)).result(RESULT) == [
        "reviewer: too short",
        "crashes raised RuntimeError: checker bug",
    ]


# -- escalation -------------------------------------------------------------------------


def _escalating_workflow(app: keel.App, faults: Faults) -> Any:
    extract = faults.tool(app, "extract", Schedule(), result=lambda text: [1, 2])

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        ctx.state.source = "doc-9"
        async for attempt in ctx.phase(
            "extract", check=totals_add_up, retries=1, on_fail="escalate", queue="finance"
        ):
            async with attempt:
                ctx.state.figures = await ctx.call(extract, ctx.state.source)
                ctx.state.total = 4
        return ctx.state.model_dump()

    return wf


async def test_phase_escalation_packet_and_state_edits(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    wf = _escalating_workflow(app, faults)
    handle = await app.start(wf)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING
    (esc,) = await app.escalations.list()
    assert info.waiting_on == [f"escalation:{esc.id}"]
    assert esc.kind == "phase" and esc.queue == "finance" and esc.step == "phase:extract#0"
    p = esc.packet
    assert p.workflow == "wf" and p.phase == "extract" and p.step == "phase:extract#0"
    assert p.messages == ["figures sum to 3, not the stated total 4"]
    assert "extract" in p.reason and "2 attempt(s)" in p.reason
    assert p.state is not None and p.state["figures"] == [1, 2] and p.state["source"] == "doc-9"
    # the journal of the last attempt: what the phase did
    assert [j["key"] for j in p.journal] == ["phase:extract#0/1/extract#0"]
    assert p.journal[0]["output"] == "[1,2]"
    assert faults.count("extract") == 2

    # a resolution that does not fit the state model is refused; nothing is decided
    with pytest.raises(keel.InputError, match="figures"):
        await app.escalations.resolve(esc.id, result={"figures": "many"}, by="ana")
    with pytest.raises(keel.InputError, match="JSON object of state fields"):
        await app.escalations.resolve(esc.id, result=[1, 2, 1], by="ana")
    assert (await app.escalations.get(esc.id)).status == "open"

    await app.escalations.resolve(esc.id, result={"figures": [1, 2, 1]}, by="ana")
    out = await handle.result(RESULT)
    assert out["figures"] == [1, 2, 1] and out["total"] == 4 and out["source"] == "doc-9"
    final = (await app.get_run(handle.id)).state
    assert final is not None and final["figures"] == [1, 2, 1]
    steps = _by_key(await app.steps(handle.id))
    assert steps["phase:extract#0"].status is StepStatus.OK
    assert steps["phase:extract#0"].fallback == "human"
    assert faults.count("extract") == 2  # the person's edits, not another run


class Author(BaseModel):
    name: str = ""


class Report(BaseModel):
    figures: list[int] = []
    total: int = 0
    author: Author = Author()


def report_adds_up(s: Report) -> str | None:  # module level: run where a resolution is entered
    if sum(s.figures) != s.total:
        return f"figures sum to {sum(s.figures)}, not the stated total {s.total}"
    return None


async def test_a_phase_resolution_must_fit_the_state_and_pass_the_checkpoint(
    make_app: Callable[..., keel.App],
) -> None:
    """The bug: `{"drfat": ...}` was accepted, the failed checkpoint passed, and the right
    resolution was then refused as already decided. With the workflow's code loaded,
    every resolution that would not pass is refused where it is entered."""
    app = make_app()

    @app.workflow(state=Report)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        async with ctx.phase("extract", check=report_adds_up, on_fail="escalate"):
            ctx.state.figures = [1, 2]
            ctx.state.total = 4
        return ctx.state.model_dump()

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    (esc,) = await app.escalations.list()
    assert esc.packet.checks == [f"{__name__}:report_adds_up"]
    for edits, message in [
        ({"drfat": [1, 3]}, "drfat: unknown field (known: figures, total, author)"),
        ({"figures": [1, 3], "drfat": 1}, "drfat: unknown field"),
        ({"$patch": {"figures": {"append": [1]}}}, "$patch: unknown field"),
        ({"author": {"nmae": "ana"}}, "author.nmae: unknown field"),
        ({"total": "four"}, "total: Input should be a valid integer"),
        ({"figures": [1, 2, 2]},
         "does not pass the checkpoint of phase 'extract': figures sum to 5, not the stated "
         "total 4. Set state fields that make it pass, or reject the escalation"),
        (None, "figures sum to 3, not the stated total 4"),  # accepting it as it stands
    ]:  # fmt: skip
        with pytest.raises(keel.InputError) as refused:
            await app.escalations.resolve(esc.id, result=edits, by="ana")
        assert message in refused.value.message, (edits, refused.value.message)
        assert refused.value.data["problems"]
        assert (await app.escalations.get(esc.id)).status == "open"
    # the right resolution is still possible, and the phase passes with it
    await app.escalations.resolve(esc.id, result={"figures": [1, 3], "author": {"name": "ana"}})
    out = await handle.result(RESULT)
    assert out == {"figures": [1, 3], "total": 4, "author": {"name": "ana"}}
    assert len(await app.escalations.list("all")) == 1


async def test_a_resolution_that_fails_when_the_run_resumes_opens_a_new_escalation(
    make_app: Callable[..., keel.App],
) -> None:
    """Where the checkpoint could not run at entry (a lambda here; the CLI without the
    code), or the store was written directly, the run checks the resolution itself: the
    phase never passes on a bad one; a new escalation says why and waits."""
    app = make_app()

    @app.workflow(state=Report)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        checks = [lambda s: None if sum(s.figures) == s.total else f"sum {sum(s.figures)}"]
        async with ctx.phase("extract", check=checks, on_fail="escalate", queue="finance"):
            ctx.state.figures = [1, 2]
            ctx.state.total = 4
        return ctx.state.model_dump()

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    first = f"{handle.id}:phase:extract#0"
    # written to the store directly, past every check at entry
    await app.store.resolve_escalation(
        first, "resolved", {"result": {"drfat": [1, 3]}, "note": None}, "mallory", time.time()
    )
    second = await _next_escalation(app, handle, f"{first}~2")
    assert second.step == "phase:extract#0" and second.queue == "finance"
    assert second.packet.reason == (
        f"phase 'extract': the resolution of escalation {first} by mallory does not fit the "
        "state: drfat: unknown field (known: figures, total, author)"
    )
    assert second.packet.state is not None and second.packet.state["figures"] == [1, 2]
    assert (await app.escalations.get(first)).status == "resolved"
    # the lambda cannot run where this is entered: accepted here, refused by the run
    await app.escalations.resolve(second.id, result={"figures": [1, 2, 2]}, by="ana")
    third = await _next_escalation(app, handle, f"{first}~3")
    assert third.packet.reason == (
        f"phase 'extract': the resolution of escalation {second.id} by ana failed the "
        "checkpoint: sum 5"
    )
    assert third.packet.messages == ["sum 5"]
    assert third.packet.state is not None and third.packet.state["figures"] == [1, 2]
    await app.escalations.resolve(third.id, result={"figures": [3, 1]}, by="ana")
    out = await handle.result(RESULT)
    assert out["figures"] == [3, 1] and out["total"] == 4
    steps = _by_key(await app.steps(handle.id))
    assert steps["phase:extract#0"].status is StepStatus.OK
    assert steps["phase:extract#0"].fallback == "human"
    assert {"phase:extract#0/escalation~3", "phase:extract#0/resolution~3"} <= set(steps)


async def _next_escalation(app: keel.App, handle: Any, esc_id: str) -> keel.Escalation:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESULT
    while loop.time() < deadline:
        info = await app.get_run(handle.id)
        if info.status is RunStatus.WAITING and info.waiting_on == [f"escalation:{esc_id}"]:
            return await app.escalations.get(esc_id)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no escalation {esc_id} opened; open: {await app.escalations.list()}")


async def test_phase_escalation_rejected(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    wf = _escalating_workflow(app, Faults())
    handle = await app.start(wf)
    await handle.settle(RESULT)
    (esc,) = await app.escalations.list(queue="finance")
    await app.escalations.reject(esc.id, reason="source document is corrupt", by="ana")
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "EscalationRejected"
    assert "source document is corrupt" in err.message and err.fallback == "human"
    assert err.step == "phase:extract#0"
    steps = _by_key(await app.steps(handle.id))
    assert steps["phase:extract#0"].status is StepStatus.ERROR


async def test_a_tool_escalation_inside_a_phase_names_the_phase(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    ok = faults.tool(app, "ok", Schedule())
    down = faults.tool(app, "down", Always("500"), fallback=keel.Fallback.human())

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> Any:
        async with ctx.phase("enrich"):
            ctx.state.source = await ctx.call(ok, "first")
            return await ctx.call(down, "second")

    handle = await app.start(wf)
    await handle.settle(RESULT)
    (esc,) = await app.escalations.list()
    assert esc.kind == "tool" and esc.packet.phase == "enrich" and esc.packet.tool == "down"
    # what the phase did before the failing step (the step itself is packet.step/error)
    assert [j["key"] for j in esc.packet.journal] == ["phase:enrich#0/0/ok#0"]
    assert esc.packet.step == "phase:enrich#0/0/down#0"
    assert esc.packet.state is not None and esc.packet.state["source"] == "first"
    await app.escalations.resolve(esc.id, result="by hand", by="ana")
    assert await handle.result(RESULT) == "by hand"


# -- replay ------------------------------------------------------------------------------


def _replay_workflow(app: keel.App, faults: Faults) -> Any:
    answers = {"0": [9], "1": [1, 2, 3]}
    extract = faults.tool(app, "extract", Schedule(), result=lambda attempt: answers[str(attempt)])
    after = faults.tool(app, "after", Schedule())

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> list[int]:
        ctx.state.total = 6
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
            async with attempt:
                ctx.state.figures = await ctx.call(extract, attempt.number)
                if attempt.number == 1:
                    await ctx.wait_for("go")  # suspend mid-phase: the resume replays
        await ctx.call(after, sum(ctx.state.figures))
        return ctx.state.figures

    return wf


async def test_replay_does_not_rerun_failed_attempts(make_app: Callable[..., keel.App]) -> None:
    first = make_app()
    faults = Faults()
    wf = _replay_workflow(first, faults)
    handle = await first.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    assert [a.key for a in faults.of("extract")] == [
        "phase:extract#0/0/extract#0",
        "phase:extract#0/1/extract#0",
    ]
    await first.close()  # this "process" is gone; another one resumes the run

    second = make_app()
    faults2 = Faults()
    wf2 = _replay_workflow(second, faults2)
    await second.signal(handle.id, "go")
    resumed = await second.start(wf2, id=handle.id)  # an existing id: watch, don't restart
    assert await resumed.result(RESULT) == [1, 2, 3]
    # the resumed process re-executed neither attempt's steps, only what came after
    assert [a.tool for a in faults2.of()] == ["after"]
    assert faults2.of("after")[0].args == (6,)
    steps = _by_key(await second.steps(handle.id))
    assert steps["phase:extract#0/0"].status is StepStatus.ERROR
    assert steps["phase:extract#0/1"].status is StepStatus.OK
    assert "phase:extract#0/2" not in steps
    assert steps["phase:extract#0"].attempts == 2


async def test_degraded_steps_of_a_discarded_attempt_do_not_count(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: list[int] = []

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.degrade(default=[]))
    async def figures(source: str) -> list[int]:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("503 from the OCR service")  # only the first attempt degrades
        return [1, 2, 3]

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        seen = []
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=1):
            async with attempt:
                ctx.state.figures = await ctx.call(figures, "doc-1")
                ctx.state.total = 6
                seen.append(list(ctx.degraded))
        await ctx.wait_for("go")  # replayed from here on: the filter must agree
        return {"seen": seen, "after": ctx.degraded}

    handle = await app.start(wf)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING
    assert info.degraded == []  # the attempt that degraded was thrown away
    await app.signal(handle.id, "go")
    out = await handle.result(RESULT)
    # the replay after the wait skips the failed attempt; the kept one degraded nothing
    assert out == {"seen": [[]], "after": []}
    assert len(calls) == 2
    assert (await app.get_run(handle.id)).degraded == []


async def test_a_kept_attempt_still_reports_its_degraded_steps(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.degrade(default=[6]))
    async def figures(source: str) -> list[int]:
        raise RuntimeError("503 from the OCR service")

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> list[str]:
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
            async with attempt:
                ctx.state.figures = await ctx.call(figures, "doc-1")
                ctx.state.total = 6
        return ctx.degraded

    handle = await app.start(wf)
    assert await handle.result(RESULT) == ["phase:extract#0/0/figures#0"]
    assert (await app.get_run(handle.id)).degraded == ["phase:extract#0/0/figures#0"]


def test_superseded_attempts_are_found_per_phase_at_any_depth() -> None:
    from keel.engine.journal import live_degraded, superseded_attempts

    attempts = ["phase:a#0/0", "phase:a#0/1", "map:m#0/3/phase:b#0/0", "phase:a#0"]
    keys = ["map:m#0/3/phase:b#0/1/tool#0"]  # b's second attempt is under way
    gone = superseded_attempts(attempts, keys)
    assert sorted(gone) == ["map:m#0/3/phase:b#0/0/", "phase:a#0/0/"]
    degraded = ["phase:a#0/0/x#0", "phase:a#0/1/x#0", "map:m#0/3/phase:b#0/0/y#0", "z#0",
                "phase:a#0/10/x#0"]
    assert live_degraded(degraded, gone) == ["phase:a#0/1/x#0", "phase:a#0/10/x#0", "z#0"]
