"""Fallbacks (degrade, human, fail, none), validation with feedback, structured failure.

Every recovery path must be visible: in the journal (`StepRecord.fallback`, its
error), on the run (`RunInfo.degraded`, `RunInfo.error`), in `keel show --json`
and in escalation packets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import keel
from keel.cli import cli
from keel.types import RunStatus, StepStatus
from tests.backends import fresh_url
from tests.faults import Always, Faults, Schedule
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
FAST = keel.Retry(attempts=3, backoff=0.001)


class Account(BaseModel):
    id: str
    tier: str


def _tool_steps(steps: list[keel.StepRecord], name: str) -> list[keel.StepRecord]:
    return [s for s in steps if s.kind.value == "tool" and s.name == name]


async def keel_cmd(store_url: str, *args: str) -> tuple[int, str, str]:
    """Run the `keel` CLI on the test's store (in a thread: it runs its own event loop)."""

    def invoke() -> Any:
        return CliRunner().invoke(cli, list(args), env={"KEEL_STORE": store_url})

    res = await asyncio.to_thread(invoke)
    return res.exit_code, res.stdout, res.stderr


def _chain(err: keel.StructuredError | None) -> list[str]:
    out = []
    while err is not None:
        out.append(err.type)
        err = err.cause
    return out


# -- degrade ----------------------------------------------------------------------------


async def test_degrade_returns_the_default_and_marks_the_data_missing(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    app = make_app()
    faults = Faults()
    enrich = faults.tool(
        app,
        "enrich",
        Always("503"),
        retry=FAST,
        fallback=keel.Fallback.degrade(default={"employees": None}),
    )
    ok = faults.tool(app, "ok", Schedule())

    @app.workflow
    async def wf(ctx: keel.Context, company: str) -> dict[str, Any]:
        profile = await ctx.call(enrich, company)
        name = await ctx.call(ok, company)
        return {"profile": profile, "name": name, "missing": ctx.degraded}

    handle = await app.start(wf, {"company": "acme"})
    out = await handle.result(RESULT)
    assert out["profile"] == {"employees": None} and out["name"] == "acme"
    (rec,) = _tool_steps(await app.steps(handle.id), "enrich")
    assert out["missing"] == [rec.key]
    assert faults.count("enrich") == 3
    assert rec.status is StepStatus.OK and rec.fallback == "degrade" and rec.attempts == 3
    assert rec.output == {"employees": None}
    # why it degraded stays on record
    assert rec.error is not None and rec.error.type == "HTTPStatusError"
    assert rec.error.fallback == "degrade" and rec.error.attempts == 3
    info = await app.get_run(handle.id)
    assert info.status is RunStatus.SUCCEEDED and info.degraded == [rec.key]
    assert info.error is None

    code, out_json, _ = await keel_cmd(store_url, "show", handle.id, "--json")
    data = json.loads(out_json)
    assert code == 0 and data["degraded"] == [rec.key]
    (shown,) = [s for s in data["steps"] if s["key"] == rec.key]
    assert shown["fallback"] == "degrade" and shown["attempts"] == 3
    assert shown["error"]["type"] == "HTTPStatusError"
    code, text, _ = await keel_cmd(store_url, "show", handle.id)
    assert code == 0 and "fallback=degrade" in text and "degraded" in text


async def test_a_degraded_step_is_not_retried_on_replay(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    faults = Faults()
    enrich = faults.tool(
        app, "enrich", Always("500"), retry=FAST, fallback=keel.Fallback.degrade(default=0)
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[Any]:
        first = await ctx.call(enrich, 1)
        seen = list(ctx.degraded)
        go = await ctx.wait_for("go")  # suspend; the resume replays from the top
        return [first, seen, go, ctx.degraded]

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    await handle.signal("go", "now")
    out = await handle.result(RESULT)
    assert out[0] == 0 and out[2] == "now" and out[1] == out[3] and len(out[1]) == 1
    assert faults.count("enrich") == 3


# -- human ---------------------------------------------------------------------------------


async def _escalated_run(
    make_app: Callable[..., keel.App], **tool_options: Any
) -> tuple[keel.App, Faults, keel.RunHandle, keel.Escalation]:
    app = make_app()
    faults = Faults()
    lookup = faults.tool(
        app,
        "lookup",
        Always("503"),
        returns=Account,
        retry=FAST,
        fallback=keel.Fallback.human(queue="accounts"),
        **tool_options,
    )
    after = faults.tool(app, "after", Schedule())

    @app.workflow
    async def wf(ctx: keel.Context, account_id: str) -> str:
        await ctx.call(after, "before")
        account = await ctx.call(lookup, account_id)
        assert isinstance(account, Account)
        await ctx.call(after, account.tier)
        return f"{account.id}:{account.tier}"

    handle = await app.start(wf, {"account_id": "A-7"})
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING
    (esc,) = await app.escalations.list()
    assert info.waiting_on == [f"escalation:{esc.id}"]
    return app, faults, handle, esc


async def test_human_fallback_suspends_with_a_complete_packet(
    make_app: Callable[..., keel.App],
) -> None:
    app, faults, handle, esc = await _escalated_run(make_app)
    assert faults.count("lookup") == 3
    assert esc.status == "open" and esc.queue == "accounts" and esc.kind == "tool"
    assert esc.run_id == handle.id and esc.workflow == "wf"
    p = esc.packet
    assert p.workflow == "wf" and p.run_id == handle.id and p.tool == "lookup"
    assert p.step == esc.step and "lookup" in p.step
    assert p.input == {"args": ["A-7"]}  # by parameter name (the tool takes *args)
    assert p.error is not None and p.error.type == "HTTPStatusError" and p.error.attempts == 3
    assert p.error.fallback == "human"
    assert "lookup" in p.reason and "3 attempt" in p.reason and "HTTP 503" in p.reason
    # what the run did so far: the step before, and the failing step itself
    keys = [item["key"] for item in p.journal]
    assert any(k.startswith("after#0") for k in keys), p.journal
    before = next(item for item in p.journal if item["key"].startswith("after#0"))
    assert before["status"] == "ok" and before["output"] == '"before"'
    # the step waits in the journal, marked as escalated
    (rec,) = _tool_steps(await app.steps(handle.id), "lookup")
    assert rec.status is StepStatus.PENDING and rec.fallback == "human" and rec.attempts == 3
    assert await app.escalations.get(esc.id) == esc
    assert [e.id for e in await app.escalations.list(queue="accounts")] == [esc.id]
    assert await app.escalations.list(queue="other") == []


async def test_resolving_supplies_the_step_result(make_app: Callable[..., keel.App]) -> None:
    app, faults, handle, esc = await _escalated_run(make_app)
    decided = await app.escalations.resolve(
        esc.id, result={"id": "A-7", "tier": "gold"}, by="dana", note="checked the CRM"
    )
    assert decided.status == "resolved" and decided.resolved_by == "dana"
    assert await handle.result(RESULT) == "A-7:gold"
    assert faults.count("lookup") == 3  # the person's answer, not another attempt
    assert [a.args for a in faults.of("after")] == [("before",), ("gold",)]
    (rec,) = _tool_steps(await app.steps(handle.id), "lookup")
    assert rec.status is StepStatus.OK and rec.fallback == "human"
    assert rec.output == {"id": "A-7", "tier": "gold"}
    stored = await app.escalations.get(esc.id)
    assert stored.status == "resolved" and stored.resolution is not None
    assert stored.resolution["result"] == {"id": "A-7", "tier": "gold"}
    assert stored.resolution["note"] == "checked the CRM"
    assert await app.escalations.list() == []
    assert [e.id for e in await app.escalations.list("resolved")] == [esc.id]
    # a decision is final
    with pytest.raises(keel.KeelError, match=r"already resolved by dana"):
        await app.escalations.resolve(esc.id, result={"id": "A-7", "tier": "pro"}, by="eve")
    with pytest.raises(keel.KeelError, match=r"already resolved by dana"):
        await app.escalations.reject(esc.id, reason="too late", by="eve")
    assert (await app.escalations.get(esc.id)).resolution == stored.resolution


async def test_an_invalid_result_is_refused_and_nothing_is_decided(
    make_app: Callable[..., keel.App],
) -> None:
    app, _, handle, esc = await _escalated_run(make_app)
    with pytest.raises(keel.InputError, match=r"tier: Field required"):
        await app.escalations.resolve(esc.id, result={"id": "A-7"}, by="dana")
    with pytest.raises(keel.InputError, match=r"is invalid"):
        await app.escalations.resolve(esc.id, result="gold", by="dana")
    with pytest.raises(keel.InputError, match=r"needs a reason"):
        await app.escalations.reject(esc.id, reason="  ", by="dana")
    with pytest.raises(keel.RunNotFound, match=r"no escalation 'nope'"):
        await app.escalations.resolve("nope", result={}, by="dana")
    with pytest.raises(keel.ConfigError, match=r"unknown escalation status"):
        await app.escalations.list("closed")
    assert (await app.escalations.get(esc.id)).status == "open"
    assert (await app.get_run(handle.id)).status is RunStatus.WAITING
    await asyncio.sleep(0.1)  # nothing was delivered: the run stays put
    assert (await app.get_run(handle.id)).status is RunStatus.WAITING
    # the valid answer still works afterwards
    await app.escalations.resolve(esc.id, result={"id": "A-7", "tier": "pro"}, by="dana")
    assert await handle.result(RESULT) == "A-7:pro"


async def test_rejecting_fails_the_step_with_escalation_rejected(
    make_app: Callable[..., keel.App],
) -> None:
    app, faults, handle, esc = await _escalated_run(make_app)
    await app.escalations.reject(esc.id, reason="account was closed", by="dana")
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "EscalationRejected"
    assert "rejected by dana" in err.message and "account was closed" in err.message
    assert err.step == esc.step
    assert err.data["by"] == "dana" and err.data["escalation"] == esc.id
    assert err.fallback == "human" and err.attempts == 3
    assert _chain(err) == ["EscalationRejected", "HTTPStatusError"]
    assert faults.count("after") == 1  # nothing after the rejected step ran
    (rec,) = _tool_steps(await app.steps(handle.id), "lookup")
    assert rec.status is StepStatus.ERROR and rec.fallback == "human"
    assert (await app.escalations.get(esc.id)).status == "rejected"
    with pytest.raises(keel.ConfigError, match=r"already rejected by dana; a decision is final"):
        await app.escalations.resolve(esc.id, result={"id": "A-7", "tier": "x"}, by="eve")


async def test_a_caught_rejection_lets_the_workflow_carry_on(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    lookup = faults.tool(
        app, "lookup", Always("500"), returns=Account, fallback=keel.Fallback.human()
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        try:
            account = await ctx.call(lookup, "A-1")
        except keel.EscalationRejected as exc:
            return f"rejected: {exc.data['by']}"
        return account.tier

    handle = await app.start(wf)
    await handle.settle(RESULT)
    (esc,) = await app.escalations.list()
    assert esc.queue == "escalations"  # the default queue
    await app.escalations.reject(esc.id, reason="no", by="sam")
    assert await handle.result(RESULT) == "rejected: sam"


async def test_a_result_is_checked_where_the_tools_are_not_loaded(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    """`keel escalations resolve` has no registry: the tool's return type recorded with
    the escalation checks the answer; a decision stored unchecked (an older Keel) is
    still caught when the run resumes, and fails the step naming the escalation."""
    _, _, handle, esc = await _escalated_run(make_app)
    assert esc.packet.result_schema is not None
    bare = make_app()  # knows the store, not the tools
    with pytest.raises(keel.InputError, match="tier: required"):
        await bare.escalations.resolve(esc.id, result={"id": "A-7"}, by="cli")
    assert (await bare.escalations.get(esc.id)).status == "open"

    await bare.store.resolve_escalation(
        esc.id, "resolved", {"result": {"id": "A-7"}, "note": None}, "old-cli", time.time()
    )
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "ValidationFailed"
    assert esc.id in err.message and "does not fit" in err.message
    assert err.fallback == "human"


async def test_each_failed_map_item_gets_its_own_escalation(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    lookup = faults.tool(
        app, "lookup", Always("500"), returns=Account, fallback=keel.Fallback.human()
    )

    @app.workflow
    async def wf(ctx: keel.Context) -> list[str]:
        res = await ctx.map(lookup, ["A-1", "A-2", "A-3"])
        return [a.tier for a in res.ok]

    handle = await app.start(wf)
    info = await handle.settle(RESULT)
    assert info.status is RunStatus.WAITING
    escs = sorted(await app.escalations.list(), key=lambda e: e.step)
    assert [e.packet.input for e in escs] == [{"args": [a]} for a in ("A-1", "A-2", "A-3")]
    assert sorted(info.waiting_on) == sorted(f"escalation:{e.id}" for e in escs)
    for n, esc in enumerate(escs):
        await app.escalations.resolve(esc.id, result={"id": f"A-{n + 1}", "tier": f"t{n}"}, by="x")
        if n < 2:  # the run resumes and waits again for the others
            await handle.settle(RESULT)
    assert await handle.result(RESULT) == ["t0", "t1", "t2"]
    assert faults.count("lookup") == 3


async def test_human_fallback_after_failed_validation_shows_the_output(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    def tier_known(a: Account) -> str | None:
        return None if a.tier in ("free", "pro", "gold") else f"unknown tier {a.tier!r}"

    @app.tool(validate=[Account, tier_known], fallback=keel.Fallback.human())
    async def guess(account_id: str) -> Account:
        return Account(id=account_id, tier="platinum")

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return (await ctx.call(guess, "A-3")).tier

    handle = await app.start(wf)
    await handle.settle(RESULT)
    (esc,) = await app.escalations.list()
    assert esc.packet.output == {"id": "A-3", "tier": "platinum"}
    assert esc.packet.messages == ["unknown tier 'platinum'"]
    assert esc.packet.error is not None and esc.packet.error.type == "ValidationFailed"
    await app.escalations.resolve(esc.id, result={"id": "A-3", "tier": "pro"}, by="dana")
    assert await handle.result(RESULT) == "pro"


# -- fail and no fallback: structured failure ------------------------------------------


async def test_fail_is_a_hard_stop_even_when_caught(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    app = make_app()
    faults = Faults()
    charge = faults.tool(app, "charge", Always("conn"), retry=FAST, fallback=keel.Fallback.fail())
    notify = faults.tool(app, "notify", Schedule())
    seen: list[str] = []

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        try:
            await ctx.call(charge, 100)
        except Exception as exc:  # the workflow tries to swallow it ...
            seen.append(type(exc).__name__)
        try:
            await ctx.call(notify, "charged")  # ... and carry on with side effects
        except Exception as exc:
            seen.append(type(exc).__name__)
        return "carried on"

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert seen and seen[0] == "StepError"
    assert faults.count("notify") == 0, "no step may run after a hard stop"
    err = info.value.error
    assert err is not None
    assert err.type == "ConnectionError" and err.message == "cannot reach api.example.com"
    assert err.fallback == "fail" and err.attempts == 3
    assert err.step is not None and err.step.startswith("charge#")
    assert err.data["tool"] == "charge"
    assert _chain(err) == ["ConnectionError", "ConnectionResetError"]
    stored = (await app.get_run(handle.id)).error
    assert stored == err
    # the store keeps the same structured error (how SQLite lays it out in its column is
    # tests/store/sqlite's test_a_failed_runs_error_column_holds_its_json)
    assert (await app.store.get_run(handle.id)).error == err  # type: ignore[union-attr]
    code, out, _ = await keel_cmd(store_url, "show", handle.id, "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "FAILED"
    assert data["error"] == err.model_dump(exclude_none=True)
    (rec,) = _tool_steps(await app.steps(handle.id), "charge")
    assert rec.status is StepStatus.ERROR and rec.fallback == "fail" and rec.attempts == 3


async def test_fail_after_validation_keeps_the_structured_error(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    app = make_app()

    @app.tool(
        validate=[Account],
        retry=keel.Retry(attempts=2, backoff=0.001),
        fallback=keel.Fallback.fail(),
    )
    async def fetch(account_id: str) -> Account:
        return {"id": account_id}  # type: ignore[return-value]

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        try:
            return (await ctx.call(fetch, "A-9")).tier
        except keel.ValidationFailed:
            return "swallowed"

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "ValidationFailed"
    assert err.fallback == "fail" and err.attempts == 2
    assert err.data["messages"] == ["tier: Field required"]
    assert err.data["output"] == {"id": "A-9"}
    assert err.step is not None and err.step.startswith("fetch#")
    assert (await app.get_run(handle.id)).error == err
    _, out, _ = await keel_cmd(store_url, "show", handle.id, "--json")
    assert json.loads(out)["error"]["fallback"] == "fail"


async def test_no_fallback_fails_the_run_naming_the_tool_and_last_error(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Schedule("500", "429", then="503"), retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context) -> None:
        await ctx.call(flaky, 1)

    handle = await app.start(wf)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT)
    assert "flaky" in str(info.value) and "HTTP 503" in str(info.value)
    err = info.value.error
    assert err is not None
    assert err.type == "HTTPStatusError" and err.message == "HTTP 503"  # the last error
    assert err.data["tool"] == "flaky" and err.attempts == 3 and err.fallback is None
    assert err.step is not None and err.step.startswith("flaky#")
    assert "Exception" in err.types
    stored = await app.get_run(handle.id)
    assert stored.status is RunStatus.FAILED and stored.error == err
    code, out, _ = await keel_cmd(store_url, "show", handle.id, "--json")
    data = json.loads(out)
    assert code == 0 and data["error"]["type"] == "HTTPStatusError"
    assert data["error"]["attempts"] == 3
    assert data["error"]["data"]["tool"] == "flaky"
    (rec,) = [s for s in data["steps"] if s["key"] == err.step]
    assert rec["status"] == "error" and rec["attempts"] == 3


async def test_a_caught_step_error_without_fallback_is_the_workflows_to_handle(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    faults = Faults()
    flaky = faults.tool(app, "flaky", Always("404"), retry=FAST)

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        try:
            await ctx.call(flaky, 1)
        except keel.StepError as exc:
            assert exc.error.attempts == 1 and exc.error.data["tool"] == "flaky"
            return f"handled {exc.error.type}"
        return "unreachable"

    assert await (await app.start(wf)).result(RESULT) == "handled HTTPStatusError"


# -- validation with feedback ---------------------------------------------------------------

TAXONOMY = ("billing", "bug", "question")


class Label(BaseModel):
    label: str
    confidence: float


def in_taxonomy(v: Label) -> str | None:
    if v.label not in TAXONOMY:
        return f"label {v.label!r} is not in the taxonomy ({', '.join(TAXONOMY)})"
    return None


def confidence_in_range(v: Label) -> list[str]:
    return [] if 0 <= v.confidence <= 1 else [f"confidence {v.confidence} is outside [0, 1]"]


BAD_MESSAGES = [
    "label 'spam' is not in the taxonomy (billing, bug, question)",
    "confidence 1.7 is outside [0, 1]",
]


def _classifier(app: keel.App, seen: list[tuple[int, tuple[str, ...]]], **opts: Any) -> Any:
    @app.tool(validate=[Label, in_taxonomy, confidence_in_range], **opts)
    async def classify(text: str) -> Label:
        info = keel.current_step()
        assert info is not None
        seen.append((info.attempt, info.feedback))
        if not info.feedback:  # first try: a well-formed but wrong answer
            return {"label": "spam", "confidence": 1.7}  # type: ignore[return-value]
        # a model would read the feedback; this one fixes exactly what it was told
        assert any("taxonomy" in m for m in info.feedback)
        return {"label": "billing", "confidence": 0.9}  # type: ignore[return-value]

    return classify


async def test_validation_retries_with_the_messages_passed_on(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    seen: list[tuple[int, tuple[str, ...]]] = []
    classify = _classifier(app, seen, retry=keel.Retry(attempts=3, backoff=0.001))

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        label = await ctx.call(classify, "my invoice is wrong")
        assert isinstance(label, Label)  # coerced into the validated type
        return label.label

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "billing"
    assert seen == [(1, ()), (2, tuple(BAD_MESSAGES))]
    (rec,) = _tool_steps(await app.steps(handle.id), "classify")
    assert rec.attempts == 2 and rec.output == {"label": "billing", "confidence": 0.9}


async def test_validation_messages_are_journaled_and_survive_a_suspension(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app(inline_sleep_max=0.01)  # the backoff suspends the run
    seen: list[tuple[int, tuple[str, ...]]] = []
    classify = _classifier(app, seen, retry=keel.Retry(attempts=3, backoff=0.2, jitter=False))

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return (await ctx.call(classify, "my invoice is wrong")).label

    handle = await app.start(wf)
    assert (await handle.settle(RESULT)).status is RunStatus.WAITING
    (pending,) = _tool_steps(await app.steps(handle.id), "classify")
    assert pending.status is StepStatus.PENDING and pending.attempts == 1
    err = pending.error
    assert err is not None and err.type == "ValidationFailed"
    assert err.data["messages"] == BAD_MESSAGES and err.data["feedback"] == BAD_MESSAGES
    assert err.data["output"] == {"label": "spam", "confidence": 1.7}
    assert all(m in err.message for m in BAD_MESSAGES)
    assert await handle.result(RESULT) == "billing"
    assert seen == [(1, ()), (2, tuple(BAD_MESSAGES))]


async def test_exhausted_validation_falls_back(make_app: Callable[..., keel.App]) -> None:
    app = make_app()
    calls: list[tuple[str, ...]] = []

    def positive(n: int) -> bool:
        return n > 0

    @app.tool(
        validate=[int, positive],
        retry=keel.Retry(attempts=3, backoff=0.001),
        fallback=keel.Fallback.degrade(default=1),
    )
    async def count(x: str) -> int:
        info = keel.current_step()
        assert info is not None
        calls.append(info.feedback)
        return -5

    @app.tool(validate=int, retry=keel.Retry(attempts=2, backoff=0.001))
    async def shape(x: str) -> Any:
        return "not a number"

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(count, "x")

    @app.workflow
    async def wf2(ctx: keel.Context) -> Any:
        return await ctx.call(shape, "x")

    handle = await app.start(wf)
    assert await handle.result(RESULT) == 1
    assert calls == [(), ("positive rejected the output",), ("positive rejected the output",)]
    (rec,) = _tool_steps(await app.steps(handle.id), "count")
    assert rec.fallback == "degrade" and rec.attempts == 3
    assert rec.error is not None and rec.error.type == "ValidationFailed"
    assert rec.error.data["messages"] == ["positive rejected the output"]

    h2 = await app.start(wf2)
    with pytest.raises(keel.RunFailed) as info:
        await h2.result(RESULT)
    err = info.value.error
    assert err is not None and err.type == "ValidationFailed" and err.attempts == 2
    assert len(err.data["messages"]) == 1 and "valid integer" in err.data["messages"][0]


async def test_a_crashing_check_is_a_failed_check(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    def explodes(v: Any) -> None:
        raise KeyError("boom")

    @app.tool(validate=explodes, fallback=keel.Fallback.degrade(default="fallback"))
    async def thing() -> str:
        return "value"

    @app.workflow
    async def wf(ctx: keel.Context) -> str:
        return await ctx.call(thing)

    handle = await app.start(wf)
    assert await handle.result(RESULT) == "fallback"
    (rec,) = _tool_steps(await app.steps(handle.id), "thing")
    assert rec.error is not None
    assert rec.error.data["messages"] == ["explodes raised KeyError: 'boom'"]


def test_validate_rejects_things_that_are_not_checks(tmp_path: Path) -> None:
    app = keel.App(fresh_url(tmp_path, "k"))
    with pytest.raises(TypeError, match="validate= takes types and check functions"):

        @app.tool(validate=[42])
        async def t() -> int:
            return 1

    with pytest.raises(keel.ConfigError, match=r"fallback= takes keel\.Fallback"):

        @app.tool(fallback="degrade")  # type: ignore[arg-type]
        async def u() -> int:
            return 1
