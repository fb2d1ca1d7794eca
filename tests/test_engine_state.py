"""Typed run state: validated assignment, per-step deltas, final state, isolation in fan-out."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, Field

import keel
from tests.limits import WAIT

RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)


class TicketState(BaseModel):
    category: str | None = None
    score: int = 0
    notes: list[str] = Field(default_factory=list)


async def test_steps_record_only_changed_fields(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def noop() -> None:
        return None

    @app.workflow(state=TicketState)
    async def triage(ctx: keel.Context) -> str:
        ctx.state.category = "billing"
        await ctx.call(noop)  # delta: category
        await ctx.call(noop)  # nothing changed
        ctx.state.score = 5
        ctx.state.notes.append("escalate")
        await ctx.call(noop)  # delta: score + notes, not category
        ctx.state.score = 5  # same value again: no change
        await ctx.call(noop)
        ctx.state.category = "refund"
        return "done"

    handle = await app.start(triage)
    assert await handle.result(RESULT_TIMEOUT) == "done"
    deltas = {s.key: s.state_delta for s in await app.steps(handle.id)}
    assert deltas == {
        "noop#0": {"category": "billing"},
        "noop#1": None,
        "noop#2": {"score": 5, "notes": ["escalate"]},
        "noop#3": None,
    }
    info = await handle.info()
    # The final state is stored on the run, including changes after the last step.
    assert info.state == {"category": "refund", "score": 5, "notes": ["escalate"]}


async def test_invalid_assignment_raises_state_validation_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow(state=TicketState)
    async def careful(ctx: keel.Context) -> dict[str, Any]:
        ctx.state.score = 3
        try:
            ctx.state.score = "not a number"
        except keel.StateValidationError as e:
            return {
                "message": str(e),
                "field": e.field,  # type: ignore[attr-defined]
                "model": e.model,  # type: ignore[attr-defined]
                "score": ctx.state.score,
            }
        raise AssertionError("assignment should have been rejected")

    out = await (await app.start(careful)).result(RESULT_TIMEOUT)
    assert out["field"] == "score"
    assert out["model"] == "TicketState"
    assert "TicketState.score" in out["message"]
    assert "not a number" in out["message"]
    assert "integer" in out["message"]
    assert out["score"] == 3  # the rejected value was not applied


async def test_uncaught_state_validation_error_fails_the_run(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow(state=TicketState)
    async def sloppy(ctx: keel.Context) -> None:
        ctx.state.notes = "not a list"

    handle = await app.start(sloppy)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT_TIMEOUT)
    assert info.value.error is not None
    assert info.value.error.type == "StateValidationError"
    assert "TicketState.notes" in info.value.error.message


async def test_state_without_declaration_is_a_clear_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def stateless(ctx: keel.Context) -> str:
        try:
            ctx.state.x = 1
        except keel.ConfigError as e:
            return str(e)
        return "no error"

    msg = await (await app.start(stateless)).result(RESULT_TIMEOUT)
    assert "has no state" in msg and "state=" in msg


def test_state_model_needs_defaults(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    class Needy(BaseModel):
        required: str

    async def wf(ctx: keel.Context) -> None: ...

    with pytest.raises(keel.ConfigError, match="constructible with no arguments"):
        app.workflow(wf, state=Needy)


async def test_state_is_restored_across_resume(make_app: Callable[..., keel.App]) -> None:
    calls: Counter[str] = Counter()
    seen_after_resume: list[dict[str, Any]] = []

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def classify(text: str) -> str:
            calls["classify"] += 1
            return "billing" if "invoice" in text else "other"

        @app.workflow(state=TicketState)
        async def triage(ctx: keel.Context, text: str) -> dict[str, Any]:
            ctx.state.category = await ctx.call(classify, text)
            ctx.state.notes.append("classified")
            decision = await ctx.wait_for("decision")
            seen_after_resume.append(ctx.state.model_dump())
            ctx.state.score = decision["score"]
            return ctx.state.model_dump()

        return app, triage

    app1, wf1 = build()
    info = await (await app1.start(wf1, {"text": "invoice #7"}, id="run-st")).settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    await app1.close()

    app2, wf2 = build()
    await app2.signal("run-st", "decision", {"score": 9})
    handle = await app2.start(wf2, {"text": "invoice #7"}, id="run-st")
    expected = {"category": "billing", "score": 9, "notes": ["classified"]}
    assert await handle.result(RESULT_TIMEOUT) == expected
    assert seen_after_resume == [{"category": "billing", "score": 0, "notes": ["classified"]}]
    assert calls == Counter(classify=1)
    assert (await handle.info()).state == expected
    deltas = {s.key: s.state_delta for s in await app2.steps("run-st")}
    assert deltas["classify#0"] is None  # assigned after the step returned
    assert deltas["signal:decision#0"] == {"category": "billing", "notes": ["classified"]}


async def test_map_children_get_isolated_copies(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.tool
    async def label(i: int) -> str:
        await asyncio.sleep(0)
        return f"item{i}"

    async def child(ctx: keel.Context, i: int) -> dict[str, Any]:
        start = ctx.state.model_dump()
        ctx.state.category = f"child{i}"
        ctx.state.notes.append(f"from child {i}")
        ctx.state.score += 1
        name = await ctx.call(label, i)  # other children run meanwhile
        return {"start": start, "end": ctx.state.model_dump(), "name": name}

    @app.workflow(state=TicketState)
    async def parent(ctx: keel.Context) -> dict[str, Any]:
        ctx.state.category = "parent"
        ctx.state.notes = ["parent note"]
        res = await ctx.map(child, range(3), concurrency=3, name="children")
        return {"children": list(res), "parent": ctx.state.model_dump()}

    handle = await app.start(parent)
    out = await handle.result(RESULT_TIMEOUT)
    parent_state = {"category": "parent", "score": 0, "notes": ["parent note"]}
    assert out["parent"] == parent_state  # no child mutation leaked into the parent
    for i, c in enumerate(out["children"]):
        assert c["start"] == parent_state
        assert c["end"] == {
            "category": f"child{i}",
            "score": 1,
            "notes": ["parent note", f"from child {i}"],
        }
    assert (await handle.info()).state == parent_state
    deltas = {s.key: s.state_delta for s in await app.steps(handle.id)}
    assert deltas["map:children#0/1/label#0"] == {
        "category": "child1",
        "score": 1,
        "$patch": {"notes": {"append": ["from child 1"]}},  # the fork's list grew by one
    }


async def test_gather_branches_get_isolated_copies(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    async def branch(ctx: keel.Context, name: str) -> str:
        ctx.state.notes.append(name)
        await asyncio.sleep(0)
        return ",".join(ctx.state.notes)

    @app.workflow(state=TicketState)
    async def fork(ctx: keel.Context) -> dict[str, Any]:
        ctx.state.notes = ["root"]
        a, b = await ctx.gather(branch(ctx, "a"), branch(ctx, "b"))
        return {"a": a, "b": b, "notes": ctx.state.notes}

    out = await (await app.start(fork)).result(RESULT_TIMEOUT)
    assert out == {"a": "root,a", "b": "root,b", "notes": ["root"]}


async def test_state_changes_before_a_timed_out_wait_are_journaled(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def noop() -> None:
        return None

    @app.workflow(state=TicketState)
    async def escalation(ctx: keel.Context) -> str:
        ctx.state.category = "awaiting approval"
        try:
            await ctx.wait_for("approve", timeout=0.05)
        except keel.SignalTimeout:
            ctx.state.score = -1
        await ctx.call(noop)
        return "escalated"

    handle = await app.start(escalation)
    assert await handle.result(RESULT_TIMEOUT) == "escalated"
    deltas = {s.key: s.state_delta for s in await app.steps(handle.id)}
    assert deltas == {
        "signal:approve#0": {"category": "awaiting approval"},
        "noop#0": {"score": -1},
    }


class Ledger(BaseModel):
    lines: list[str] = Field(default_factory=list)
    seen: dict[str, int] = Field(default_factory=dict)
    nested: dict[str, list[int]] = Field(default_factory=dict)


async def test_growing_collections_store_what_changed_not_the_whole_value(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    """400 appends of 60 B once wrote 5.5 MB of deltas (the whole list every step)."""
    app = make_app()
    n = 400

    @app.tool
    async def tick(i: int) -> int:
        return i

    @app.workflow(state=Ledger)
    async def grow(ctx: keel.Context) -> int:
        for i in range(n):
            ctx.state.lines.append(f"{i:04d}-" + "x" * 55)  # 60 B per entry
            ctx.state.seen[f"k{i}"] = i
            ctx.state.nested.setdefault("evens" if i % 2 == 0 else "odds", []).append(i)
            await ctx.call(tick, i)
        await ctx.wait_for("go")
        return len(ctx.state.lines)

    handle = await app.start(grow)
    info = await handle.settle(RESULT_TIMEOUT * 3)
    assert info.status is keel.RunStatus.WAITING
    import pydantic_core

    # what the journal stores per step: its delta as JSON (the store's encoding of it)
    journal = await app.store.load_steps(handle.id)
    stored = sum(len(pydantic_core.to_json(r.state_delta)) for r in journal if r.state_delta)
    # each step stores its new line, key and number (~150 B): linear, not quadratic
    assert stored < n * 200, stored

    # Folding the deltas in journal order gives exactly the state the run holds.
    from keel.engine.state import apply_delta

    folded: dict[str, Any] = Ledger().model_dump(mode="json")
    for rec in await app.steps(handle.id):
        folded = apply_delta(folded, rec.state_delta)
    assert folded == info.state
    assert len(folded["lines"]) == n and folded["nested"]["odds"][-1] == n - 1

    # Replay restores it exactly too: a new App resumes the waiting run from the journal.
    await app.close()
    app2 = make_app()
    app2.workflow(state=Ledger, name="grow")(grow)
    app2.tool(tick.__wrapped__, name="tick")
    await app2.signal(handle.id, "go")
    assert await (await app2.start("grow", id=handle.id)).result(RESULT_TIMEOUT) == n
    assert (await app2.get_run(handle.id)).state == folded


def test_delta_patches_compose_and_apply() -> None:
    from keel.engine.state import PATCH, apply_delta, changed_fields, compose

    base = {"a": [1, 2], "b": {"x": 1, "y": 2, "z": 3}, "c": 0}
    d1 = {"c": 1, PATCH: {"a": {"append": [3]}, "b": {"set": {"w": 4}, "unset": ["x"]}}}
    d2 = {PATCH: {"a": {"append": [4]}, "b": {"set": {"y": [9]}}}}
    after1 = apply_delta(base, d1)
    assert after1 == {"a": [1, 2, 3], "b": {"y": 2, "z": 3, "w": 4}, "c": 1}
    assert base == {"a": [1, 2], "b": {"x": 1, "y": 2, "z": 3}, "c": 0}  # not modified
    current = {"a": [1, 2, 3, 4], "b": {"y": [9], "z": 3, "w": 4}, "c": 1}
    both = compose(d1, d2, current)
    assert both is not None
    assert both[PATCH]["a"] == {"append": [3, 4]}
    assert apply_delta(base, both) == apply_delta(after1, d2) == {
        "a": [1, 2, 3, 4], "b": {"y": [9], "z": 3, "w": 4}, "c": 1
    }
    assert sorted(changed_fields(both)) == ["a", "b", "c"]
