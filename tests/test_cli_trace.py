"""`keel trace RUN_ID [--json]`: the span tree of a run from the local trace store, and
the store's retention of spans."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import cli
from keel.observe import ids
from keel.observe.spans import SpanRow
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)


async def keel_cmd(store_url: str, *args: str) -> tuple[int, str, str]:
    """The `keel` CLI on the test's store (in a thread: it runs its own event loop)."""

    def invoke() -> Any:
        env = {"KEEL_STORE": store_url, "COLUMNS": "240", "NO_COLOR": "1"}
        return CliRunner().invoke(cli, list(args), env=env)

    res = await asyncio.to_thread(invoke)
    return res.exit_code, res.stdout, res.stderr


def checkout_app(app: keel.App) -> Any:
    @app.tool
    async def reserve(sku: str) -> str:
        return f"hold-{sku}"

    @app.tool(retry=keel.Retry(attempts=2, backoff=0.001))
    async def charge(amount: int) -> str:
        raise ConnectionError(f"payment gateway unreachable while charging {amount} EUR")

    @app.tool
    async def ship(sku: str) -> str:
        return "shipped"

    @app.workflow
    async def checkout(ctx: keel.Context, sku: str) -> str:
        await ctx.call(reserve, sku)
        await ctx.call(charge, 42)
        return await ctx.call(ship, sku)  # type: ignore[no-any-return]

    return checkout


async def failed_run(app: keel.App) -> str:
    handle = await app.start(checkout_app(app), {"sku": "A1"})
    with pytest.raises(keel.RunFailed):
        await handle.result(RESULT)
    await app.trace(handle.id)  # written before the CLI reads the store
    return handle.id


async def test_trace_of_a_failed_run_names_the_failing_step_and_its_error(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    run_id = await failed_run(make_app())
    code, out, err = await keel_cmd(store_url, "trace", run_id)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"trace {ids.hex_trace(ids.trace_id(run_id))}"
    root = next(ln for ln in lines if "invoke_workflow checkout" in ln)
    assert " ERROR" in root and "ConnectionError: payment gateway unreachable" in root
    assert re.search(r"\d+\.\d ms", root)
    [failing] = [ln for ln in lines if "charge#0" in ln]
    assert " ERROR" in failing
    assert "attempts=2" in failing
    assert "ConnectionError: payment gateway unreachable while charging 42 EUR" in failing
    [ok] = [ln for ln in lines if "reserve#0" in ln]
    assert " OK" in ok and "ERROR" not in ok
    assert "ship#0" not in out  # never reached
    # the tree: steps under the execution, one tool call per attempt under the step
    assert sum("execute_tool charge" in ln for ln in lines) == 2
    indent = {
        name: next(ln for ln in lines if name in ln).index(name)
        for name in (
            "invoke_workflow checkout",
            "execute checkout",
            "charge#0",
            "execute_tool charge",
        )
    }
    assert (
        indent["invoke_workflow checkout"]
        < indent["execute checkout"]
        < indent["charge#0"]
        < indent["execute_tool charge"]
    )


async def test_trace_json_shape(make_app: Callable[..., keel.App], store_url: str) -> None:
    run_id = await failed_run(make_app())
    code, out, err = await keel_cmd(store_url, "trace", run_id, "--json")
    assert code == 0, err
    spans = json.loads(out)
    assert isinstance(spans, list) and len(spans) == 7  # root, exec, 2 steps, 3 tool calls
    keys = {
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "kind",
        "start_ns",
        "end_ns",
        "status",
        "status_message",
        "attributes",
        "events",
        "links",
    }
    for s in spans:
        assert set(s) == keys
        assert re.fullmatch(r"[0-9a-f]{32}", s["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", s["span_id"])
        assert isinstance(s["attributes"], dict) and isinstance(s["events"], list)
        assert isinstance(s["start_ns"], int) and s["end_ns"] >= s["start_ns"]
    assert {s["trace_id"] for s in spans} == {ids.hex_trace(ids.trace_id(run_id))}
    span_ids = {s["span_id"] for s in spans}
    assert len(span_ids) == len(spans)
    [root] = [s for s in spans if s["parent_id"] is None]
    assert all(s["parent_id"] in span_ids for s in spans if s is not root)
    assert root["name"] == "invoke_workflow checkout" and root["status"] == "ERROR"
    assert root["attributes"]["keel.error.step"] == "charge#0"
    assert root["attributes"]["error.type"] == "ConnectionError"
    [charge] = [s for s in spans if s["attributes"].get("keel.step.key") == "charge#0"]
    assert charge["status"] == "ERROR"
    assert charge["status_message"].startswith("ConnectionError: payment gateway unreachable")
    calls = [s for s in spans if s["parent_id"] == charge["span_id"]]
    assert sorted(c["attributes"]["keel.attempt"] for c in calls) == [1, 2]
    assert spans == sorted(spans, key=lambda s: s["start_ns"])  # oldest first


async def test_trace_of_an_unknown_run_is_a_one_line_error(store_url: str) -> None:
    code, out, err = await keel_cmd(store_url, "trace", "run_does_not_exist")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "run_does_not_exist" in err


async def test_trace_with_tracing_off_says_so(
    make_app: Callable[..., keel.App], store_url: str
) -> None:
    """Tracing off: no execution or root span is written (nor exported). `keel trace`
    (tracing on) still builds the whole trace of a run that ended in one execution from
    the journal and the run's record: a root, the execution, the step and its call."""
    app = make_app(tracing=False)

    @app.tool
    async def one() -> int:
        return 1

    @app.workflow
    async def bare(ctx: keel.Context) -> int:
        return await ctx.call(one)  # type: ignore[no-any-return]

    handle = await app.start(bare, {})
    assert await handle.result(RESULT) == 1
    assert await app.trace(handle.id) == []  # this App traces nothing, and reads the table
    assert await app.store.load_spans(ids.hex_trace(ids.trace_id(handle.id))) == []

    code, out, err = await keel_cmd(store_url, "trace", handle.id)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"trace {ids.hex_trace(ids.trace_id(handle.id))}"
    [root] = [ln for ln in lines if "invoke_workflow bare" in ln]
    assert " OK" in root and "(interrupted)" not in root and re.search(r"\d+\.\d ms", root)
    assert "no execution spans stored" not in root
    [execution] = [ln for ln in lines if "execute bare" in ln]
    [step] = [ln for ln in lines if "one#0" in ln]
    [call] = [ln for ln in lines if "execute_tool one" in ln]
    assert (
        root.index("invoke_workflow")
        < execution.index("execute bare")
        < step.index("one#0")
        < call.index("execute_tool")
    )

    code, out, err = await keel_cmd(store_url, "trace", handle.id, "--json")
    assert code == 0, err
    spans = json.loads(out)
    assert sorted(s["name"] for s in spans) == [
        "execute bare",
        "execute_tool one",
        "invoke_workflow bare",
        "one#0",
    ]
    [root_span] = [s for s in spans if s["parent_id"] is None]
    assert root_span["status"] == "OK" and root_span["end_ns"] >= root_span["start_ns"]
    assert root_span["attributes"]["keel.root.synthesized"] is True
    assert root_span["attributes"]["keel.run.status"] == "SUCCEEDED"
    assert "keel.trace.note" not in root_span["attributes"]
    [execution_span] = [s for s in spans if "keel.execution" in s["attributes"]]
    assert execution_span["parent_id"] == root_span["span_id"]  # built from the run's record
    [step_span] = [s for s in spans if s["name"] == "one#0"]
    assert step_span["parent_id"] == execution_span["span_id"]
    assert step_span["attributes"]["keel.step.output"] == "1"
    # reading wrote nothing
    assert await app.store.load_spans(ids.hex_trace(ids.trace_id(handle.id))) == []


async def test_trace_collapses_wide_maps(make_app: Callable[..., keel.App], store_url: str) -> None:
    app = make_app()

    @app.tool
    async def check(i: int) -> int:
        if i % 5 == 4:
            raise ValueError(f"item {i} is bad")
        return i

    @app.workflow
    async def wide(ctx: keel.Context) -> int:
        res = await ctx.map(check, list(range(20)), require=keel.AtLeast(0.5))
        return len(res.ok)

    handle = await app.start(wide, {})
    assert await handle.result(RESULT) == 16
    await app.trace(handle.id)
    code, out, err = await keel_cmd(store_url, "trace", handle.id)
    assert code == 0, err
    assert "map:check#0" in out
    assert "… 12 more spans (3 failed)" in out  # 8 items shown, the rest summarised


# -- retention ------------------------------------------------------------------------------


def _span(run_id: str, key: str, end_ns: int | None) -> SpanRow:
    return SpanRow(
        span_id=ids.step_span_id(run_id, key),
        trace_id=ids.trace_id(run_id),
        parent_id=None,
        run_id=run_id,
        name=key,
        kind="INTERNAL",
        start_ns=(end_ns or time.time_ns()) - 1000,
        end_ns=end_ns,
        status="OK" if end_ns else "UNSET",
        attributes={"keel.step.key": key},
    )


async def test_purge_spans_removes_spans_that_ended_before_the_cutoff(
    make_app: Callable[..., keel.App],
) -> None:
    store = make_app().store
    now = time.time_ns()
    day = 86_400 * 10**9
    rows = [
        _span("old", "a", now - 10 * day),
        _span("old", "b", now - 9 * day),
        _span("old", "open", None),  # never ended (an interrupted span): kept
        _span("new", "c", now - day),
    ]
    await store.write_spans([r.row() for r in rows])
    await store.write_spans([rows[0].row()])  # a duplicate is ignored
    assert len(await store.span_ids(ids.hex_trace(ids.trace_id("old")))) == 3

    assert await store.purge_spans(now - 7 * day) == 2
    assert await store.span_ids(ids.hex_trace(ids.trace_id("old"))) == {
        ids.hex_span(ids.step_span_id("old", "open"))
    }
    kept = await store.load_spans(ids.hex_trace(ids.trace_id("new")))
    assert [SpanRow.from_row(r).name for r in kept] == ["c"]
    assert await store.purge_spans(now - 7 * day) == 0


async def test_tracing_applies_the_retention_setting(make_app: Callable[..., keel.App]) -> None:
    app = make_app(trace_retention_days=3.0)
    now = time.time_ns()
    day = 86_400 * 10**9
    await app.store.write_spans(
        [_span("ancient", "x", now - 4 * day).row(), _span("recent", "y", now - 2 * day).row()]
    )

    @app.workflow
    async def tick(ctx: keel.Context) -> int:
        return 1

    handle = await app.start(tick, {})
    assert await handle.result(RESULT) == 1
    assert len(await app.trace(handle.id)) == 2  # root and execution
    assert await app.store.span_ids(ids.hex_trace(ids.trace_id("ancient"))) == set()
    assert len(await app.store.span_ids(ids.hex_trace(ids.trace_id("recent")))) == 1
