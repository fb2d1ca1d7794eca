"""Errors users hit: bad input, unknown workflows, unstorable outputs, failed steps."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.types import StepStatus
from tests.limits import WAIT

RESULT_TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)
ROOT = Path(__file__).resolve().parent.parent


class Ticket(BaseModel):
    id: str
    priority: int = 1


async def test_unknown_workflow_name(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def known(ctx: keel.Context) -> None: ...

    with pytest.raises(keel.UnknownWorkflowError) as info:
        await app.start("nope")
    assert "unknown workflow 'nope'" in str(info.value)
    assert "registered: known" in str(info.value)

    async def undecorated(ctx: keel.Context) -> None: ...

    with pytest.raises(keel.UnknownWorkflowError, match=r"@app\.workflow"):
        await app.start(undecorated)
    assert await app.list_runs() == []


async def test_start_by_registered_name(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow(name="greeter")
    async def greet(ctx: keel.Context, name: str) -> str:
        return f"hi {name}"

    assert await (await app.start("greeter", {"name": "Ada"})).result(RESULT_TIMEOUT) == "hi Ada"


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        (
            {"ticket": {"id": "T1", "priority": "high"}},
            "ticket.priority",
            "Input should be a valid integer",
        ),
        ({"ticket": {"priority": 2}}, "ticket.id", "Field required"),
        ({}, "ticket", "Field required"),
        ({"ticket": {"id": "T1"}, "extra": 1}, "extra", "Extra inputs are not permitted"),
    ],
    ids=["wrong-type", "missing-nested", "missing", "unexpected"],
)
async def test_invalid_input_names_the_field_and_writes_no_run(
    make_app: Callable[..., keel.App], payload: dict[str, Any], field: str, fragment: str
) -> None:
    app = make_app()
    calls: Counter[str] = Counter()

    @app.workflow
    async def triage(ctx: keel.Context, ticket: Ticket) -> str:
        calls["triage"] += 1
        return ticket.id

    with pytest.raises(keel.InputError) as info:
        await app.start(triage, payload, id="bad-input")
    msg = str(info.value)
    assert "input for workflow 'triage' is invalid" in msg
    assert f"{field}: {fragment}" in msg
    assert [".".join(e["loc"]) for e in info.value.errors] == [field]  # type: ignore[attr-defined]
    assert await app.list_runs() == []
    with pytest.raises(keel.RunNotFound):
        await app.get_run("bad-input")
    assert calls["triage"] == 0


async def test_input_must_be_a_mapping(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    @app.workflow
    async def two_args(ctx: keel.Context, a: int, b: int) -> int:
        return a + b

    with pytest.raises(keel.InputError, match=r"keyword arguments \(a, b\), not list"):
        await app.start(two_args, [1, 2])
    assert await app.list_runs() == []
    assert await (await app.start(two_args, {"a": 1, "b": 2})).result(RESULT_TIMEOUT) == 3


async def test_input_that_cannot_be_stored_is_an_input_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def anything(ctx: keel.Context, blob: Any) -> str:
        return "ran"

    with pytest.raises(keel.InputError) as info:
        await app.start(anything, {"blob": object()}, id="unstorable")
    assert "input for workflow 'anything' cannot be stored as JSON" in str(info.value)
    assert await app.list_runs() == []


async def test_single_model_input_can_be_passed_directly(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def handle_ticket(ctx: keel.Context, ticket: Ticket) -> dict[str, Any]:
        assert isinstance(ticket, Ticket)
        return ticket.model_dump()

    handle = await app.start(handle_ticket, Ticket(id="T9", priority=3))
    assert await handle.result(RESULT_TIMEOUT) == {"id": "T9", "priority": 3}
    assert (await handle.info()).input == {"ticket": {"id": "T9", "priority": 3}}


async def test_unserialisable_step_output_fails_clearly_and_writes_no_output(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()
    calls: Counter[str] = Counter()

    @app.tool
    async def opaque() -> Any:
        calls["opaque"] += 1
        return object()

    @app.tool
    async def after() -> str:
        calls["after"] += 1
        return "after"

    @app.workflow
    async def leaky(ctx: keel.Context) -> Any:
        await ctx.call(opaque)
        return await ctx.call(after)

    handle = await app.start(leaky)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT_TIMEOUT)
    err = info.value.error
    assert err is not None
    assert err.type == "SerializationError"
    assert err.step == "opaque#0"
    assert "step 'opaque#0' returned a object, which Keel cannot store" in err.message
    assert "Pydantic model" in err.message  # says what to do instead
    assert (await handle.status()) is keel.RunStatus.FAILED
    steps = await app.steps(handle.id)
    assert [(s.key, s.status) for s in steps] == [("opaque#0", StepStatus.ERROR)]
    assert steps[0].output is None and steps[0].blob is None
    assert steps[0].error is not None and steps[0].error.type == "SerializationError"
    assert calls == Counter(opaque=1)


async def test_caught_serialization_error_replays_without_rerunning_the_tool(
    make_app: Callable[..., keel.App],
) -> None:
    calls: Counter[str] = Counter()
    caught: list[str] = []

    def build() -> tuple[keel.App, Any]:
        app = make_app()

        @app.tool
        async def opaque() -> Any:
            calls["opaque"] += 1
            return object()

        @app.workflow
        async def guarded(ctx: keel.Context) -> str:
            try:
                await ctx.call(opaque)
            except keel.SerializationError as e:
                caught.append(e.to_structured().step or "")
            return str(await ctx.wait_for("go"))

        return app, guarded

    app1, wf1 = build()
    info = await (await app1.start(wf1, id="run-ser")).settle(RESULT_TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    await app1.close()
    app2, wf2 = build()
    await app2.signal("run-ser", "go", "ok")
    assert await (await app2.start(wf2, id="run-ser")).result(RESULT_TIMEOUT) == "ok"
    assert calls == Counter(opaque=1)
    assert caught == ["opaque#0", "opaque#0"]


async def test_unserialisable_workflow_result_fails_the_run(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.workflow
    async def returns_junk(ctx: keel.Context) -> Any:
        return object()

    handle = await app.start(returns_junk)
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT_TIMEOUT)
    assert info.value.error is not None
    assert info.value.error.type == "SerializationError"
    assert "workflow 'returns_junk'" in info.value.error.message
    assert (await handle.info()).result is None


async def test_uncaught_tool_error_fails_the_run_with_a_structured_error(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool
    async def lookup(account_id: str) -> str:
        try:
            raise KeyError(account_id)
        except KeyError as exc:
            raise RuntimeError(f"account {account_id} not found") from exc

    @app.workflow
    async def needs_account(ctx: keel.Context, account_id: str) -> str:
        out: str = await ctx.call(lookup, account_id)
        return out

    handle = await app.start(needs_account, {"account_id": "A1"})
    with pytest.raises(keel.RunFailed) as info:
        await handle.result(RESULT_TIMEOUT)
    err = info.value.error
    assert err is not None
    assert (err.type, err.step, err.message) == ("RuntimeError", "lookup#0", "account A1 not found")
    assert err.cause is not None and err.cause.type == "KeyError"
    assert "RuntimeError" in str(info.value) and "[step lookup#0]" in str(info.value)
    assert info.value.run_id == handle.id  # type: ignore[attr-defined]


async def test_tool_timeout_is_a_step_error_matching_timeout(
    make_app: Callable[..., keel.App],
) -> None:
    app = make_app()

    @app.tool(timeout=0.05)
    async def hang() -> None:
        await asyncio.Event().wait()

    @app.workflow
    async def bounded(ctx: keel.Context) -> list[Any]:
        try:
            await ctx.call(hang)
        except keel.StepError as e:
            return [e.matches(TimeoutError), e.error.type, e.error.step]
        return []

    out = await (await app.start(bounded)).result(RESULT_TIMEOUT)
    assert out == [True, "TimeoutError", "hang#0"]


async def test_plain_functions_and_lambdas_in_ctx_call(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    def add(a: int, b: int) -> int:  # unregistered sync function: still one journaled step
        return a + b

    @app.workflow
    async def calls_things(ctx: keel.Context) -> dict[str, Any]:
        total = await ctx.call(add, 2, b=3)
        try:
            await ctx.call(lambda: 1)
        except keel.ConfigError as e:
            lam = str(e)
        try:
            await ctx.map(add, [1], concurrency=0)
        except keel.ConfigError as e:
            conc = str(e)
        return {"total": total, "lambda": lam, "concurrency": conc}

    handle = await app.start(calls_things)
    out = await handle.result(RESULT_TIMEOUT)
    assert out["total"] == 5
    assert "lambda has no stable name" in out["lambda"]
    assert "concurrency must be >= 1" in out["concurrency"]
    keys = [s.key for s in await app.steps(handle.id)]
    assert keys == ["add#0"]  # named by __name__, so moving the function keeps its keys


def test_registration_errors(make_app: Callable[..., keel.App]) -> None:
    app = make_app()

    def not_async(ctx: keel.Context) -> None: ...

    with pytest.raises(keel.ConfigError, match="must be an `async def`"):
        app.workflow(not_async)

    async def star(ctx: keel.Context, *args: Any) -> None: ...

    with pytest.raises(keel.ConfigError, match=r"\*args/\*\*kwargs are not supported"):
        app.workflow(star)

    async def one(ctx: keel.Context) -> None: ...

    async def other(ctx: keel.Context) -> None: ...

    app.workflow(one, name="dup")
    with pytest.raises(keel.ConfigError, match="two workflows are named 'dup'"):
        app.workflow(other, name="dup")


def test_bad_store_url_is_a_clear_error() -> None:
    with pytest.raises(keel.ConfigError, match="unsupported store URL"):
        keel.App("postgresx://nowhere").store  # noqa: B018


def test_structured_errors_are_json_safe() -> None:
    try:
        try:
            raise ValueError("inner")
        except ValueError as exc:
            raise keel.InputError("outer", workflow="wf") from exc
    except keel.InputError as e:
        from keel.errors import structured

        err = structured(e, step="s#0")
    assert err.type == "InputError"
    assert err.step == "s#0"
    assert err.data == {"workflow": "wf"}
    assert err.cause is not None and err.cause.type == "ValueError"
    assert "KeelError" in err.types
    assert keel.StructuredError.model_validate_json(err.model_dump_json()) == err


def test_import_keel_stays_lazy() -> None:
    code = (
        "import keel, sys\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported eagerly'\n"
        "assert 'keel.app' not in sys.modules\n"
        "assert keel.__version__\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT
    )
    assert proc.returncode == 0, proc.stderr
