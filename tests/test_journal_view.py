"""`keel.observe.journal_view` on real runs: each state change credited to the step after
which the workflow made it, through phases (retries, a person's resolution), gather
branches, a durable timer, a failed run and a run resumed after waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

import keel
from keel.observe.journal_view import JournalView, journal_view
from keel.types import RunStatus
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)


class Doc(BaseModel):
    source: str = ""
    figures: list[int] = Field(default_factory=list)
    total: int = 0
    note: str = ""


START = Doc().model_dump(mode="json")
FIELDS = set(Doc.model_fields)


async def view_of(app: keel.App, run_id: str) -> JournalView:
    run = await app.get_run(run_id)
    return journal_view(run, await app.steps(run_id), dict(START), FIELDS)


def totals_add_up(state: Doc) -> list[str]:
    if sum(state.figures) == state.total:
        return []
    return [f"figures sum to {sum(state.figures)}, not the stated total {state.total}"]


async def test_a_phase_escalation_and_the_persons_edits(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def extract(text: str) -> list[int]:
        return [1, 2]

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> dict[str, Any]:
        ctx.state.source = "doc-9"
        async for attempt in ctx.phase(
            "extract", check=totals_add_up, retries=1, on_fail="escalate", queue="finance"
        ):
            async with attempt:
                ctx.state.figures = await ctx.call(extract, ctx.state.source)
                ctx.state.total = 4  # after the attempt's last step
        ctx.state.note = "checked"  # after the phase, the run's last step
        return ctx.state.model_dump()

    handle = await app.start(wf)
    assert (await handle.settle(SETTLE)).status is RunStatus.WAITING
    view = await view_of(app, handle.id)
    nodes = view.by_key()
    # set before the phase: recorded with its first step, credited before it
    assert view.start.changed == ["source"] and view.start.state == {**START, "source": "doc-9"}
    one = nodes["phase:extract#0/1/extract#0"]
    # the changes after attempt 1's last step are only in the waiting run's snapshot
    assert one.changed == ["figures", "total"]
    assert one.state == {**START, "source": "doc-9", "figures": [1, 2], "total": 4}
    assert nodes["phase:extract#0/1"].state == one.state  # what the checkpoint judged
    # attempt 1 restarted from the phase's start, not from attempt 0's end
    assert nodes["phase:extract#0/0/extract#0"].changed == []
    assert nodes["phase:extract#0"].rec is None

    (esc,) = await app.escalations.list()
    await app.escalations.resolve(esc.id, result={"figures": [1, 2, 1]}, by="ana")
    out = await handle.result(SETTLE)
    final = {**START, "source": "doc-9", "figures": [1, 2, 1], "total": 4, "note": "checked"}
    assert out == final
    nodes = (await view_of(app, handle.id)).by_key()
    one = nodes["phase:extract#0/1/extract#0"]
    assert one.changed == ["figures", "total"]
    assert one.state == {**START, "source": "doc-9", "figures": [1, 2], "total": 4}
    resolution = nodes["phase:extract#0/resolution"]
    assert resolution.changed == ["figures"]
    assert resolution.state == {**one.state, "figures": [1, 2, 1]}
    phase = nodes["phase:extract#0"]
    assert phase.changed == ["note"] and phase.state == final


async def test_gather_branches_work_on_their_own_copies(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def look(name: str) -> str:
        return f"seen {name}"

    async def branch(ctx: keel.Context, name: str) -> str:
        ctx.state.note = f"branch {name}"
        got: str = await ctx.call(look, name)
        ctx.state.figures.append(len(name))
        await ctx.call(look, "again")
        return got

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> list[Any]:
        await ctx.call(look, "first")
        ctx.state.total = 7
        res = await ctx.gather(branch(ctx, "a"), branch(ctx, "bb"))
        ctx.state.source = "both"
        return list(res.ok)

    handle = await app.start(wf)
    assert await handle.result(SETTLE) == ["seen a", "seen bb"]
    nodes = (await view_of(app, handle.id)).by_key()
    assert nodes["look#0"].changed == ["total"]
    for i, name in enumerate(["a", "bb"]):
        key = f"gather#0/{i}"
        assert nodes[key].changed == ["note"]  # before the branch's first step
        first = nodes[f"{key}/look#0"]
        assert first.changed == ["figures"]
        assert first.state == {
            **START, "total": 7, "note": f"branch {name}", "figures": [len(name)]
        }
        assert nodes[key].state == first.state  # the branch's end
    assert nodes["gather#0"].changed == ["source"]
    assert nodes["gather#0"].state == {**START, "total": 7, "source": "both"}
    assert nodes["gather#0"].state == (await app.get_run(handle.id)).state


async def test_a_waiting_run_credits_what_only_its_snapshot_holds(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(inline_sleep_max=0.0)

    @app.tool
    async def step(n: int) -> int:
        return n

    @app.workflow(state=Doc)
    async def napper(ctx: keel.Context) -> None:
        await ctx.call(step, 1)
        ctx.state.figures.append(1)  # a durable timer's record holds no state change
        await ctx.sleep(3600)

    handle = await app.start(napper)
    assert (await handle.settle(SETTLE)).status is RunStatus.WAITING
    nodes = (await view_of(app, handle.id)).by_key()
    assert nodes["sleep#0"].rec is not None and nodes["sleep#0"].open
    assert nodes["step#0"].changed == ["figures"]
    assert nodes["step#0"].state == {**START, "figures": [1]}
    assert nodes["sleep#0"].changed == [] and nodes["sleep#0"].state == nodes["step#0"].state
    await handle.cancel()


async def test_a_resumed_run_that_fails_after_its_last_step(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def step(n: int) -> int:
        return n

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> None:
        await ctx.call(step, 1)
        ctx.state.figures.append(1)
        await ctx.wait_for("go")
        ctx.state.figures.append(2)
        await ctx.call(step, 2)
        ctx.state.note = "giving up"  # after the last step; then the run fails
        raise RuntimeError("no")

    handle = await app.start(wf)
    assert (await handle.settle(SETTLE)).status is RunStatus.WAITING
    nodes = (await view_of(app, handle.id)).by_key()
    assert nodes["step#0"].changed == ["figures"] and nodes["signal:go#0"].open
    await handle.signal("go", 1)
    info = await handle.settle(SETTLE)
    assert info.status is RunStatus.FAILED, info
    nodes = (await view_of(app, handle.id)).by_key()
    assert nodes["step#0"].changed == ["figures"]
    assert nodes["signal:go#0"].changed == ["figures"]
    assert nodes["signal:go#0"].state == {**START, "figures": [1, 2]}
    assert nodes["step#1"].changed == ["note"]
    assert nodes["step#1"].state == info.state == {**START, "figures": [1, 2], "note": "giving up"}


async def test_without_the_workflow_a_map_items_changes_are_not_the_runs(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def step(n: int) -> int:
        return n

    async def item(ctx: keel.Context, n: int) -> int:
        ctx.state.note = f"item {n}"  # the item's own copy: the run's note stays ""
        got: int = await ctx.call(step, n)
        return got

    @app.workflow(state=Doc)
    async def wf(ctx: keel.Context) -> None:
        await ctx.call(step, 0)
        ctx.state.total = 3
        await ctx.map(item, [1, 2])

    handle = await app.start(wf)
    await handle.result(SETTLE)
    run = await app.get_run(handle.id)
    view = journal_view(run, await app.steps(handle.id))  # no initial state: inferred
    assert view.initial_from == "final state"
    assert view.initial == {"source": "", "figures": [], "note": ""}
    nodes = view.by_key()
    assert nodes["step#0"].changed == ["total"]
    assert nodes["map:item#0"].changed == []  # nothing changed after the last step
    assert nodes["map:item#0"].state == run.state
    assert nodes["map:item#0/1"].changed == ["note"]
