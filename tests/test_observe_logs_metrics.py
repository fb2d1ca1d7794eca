"""Structured logs carry the trace and span ids of the step they were written in;
OpenTelemetry metrics count runs by status, step latency, retries, fallbacks, tokens
and cost by model."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import Gateway, ScriptedModel
from keel.observe import JsonFormatter, TraceContextFilter, configure_logging, ids
from keel.types import RunStatus
from tests.faults import Always, Faults, Schedule
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)


# -- logs -----------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger set up with `keel.observe.configure_logging`, writing to a buffer."""
    logger = logging.getLogger("tests.observe.tools")
    handler = configure_logging("INFO", logger=logger)
    buf = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    logger.propagate = False
    try:
        yield logger, buf
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


async def test_logs_inside_a_step_carry_its_trace_and_span_ids(
    make_app: Callable[..., keel.App], json_log: tuple[logging.Logger, io.StringIO]
) -> None:
    log, buf = json_log
    app = make_app()

    @app.tool
    async def charge(order: int) -> str:
        log.info("charging order %d", order)
        return f"charged-{order}"

    @app.workflow
    async def orders(ctx: keel.Context, n: int) -> list[str]:
        first = await ctx.call(charge, 0)
        rest = await ctx.map(charge, list(range(1, n)), concurrency=3)
        return [first, *rest.ok]

    log.info("before any run")
    handle = await app.start(orders, {"n": 4})
    assert len(await handle.result(WAIT)) == 4
    spans = await app.trace(handle.id)
    span_of = {s.attributes["keel.step.key"]: s for s in spans if "keel.step.key" in s.attributes}

    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    outside, *inside = lines
    assert outside["message"] == "before any run" and "trace_id" not in outside
    assert outside["level"] == "INFO" and outside["logger"] == "tests.observe.tools"
    assert len(inside) == 4
    trace_hex = ids.hex_trace(ids.trace_id(handle.id))
    seen = set()
    for line in inside:
        assert line["trace_id"] == trace_hex
        assert line["run_id"] == handle.id
        step = span_of[line["step"]]  # the step the line was logged in (map items too)
        assert line["span_id"] == ids.hex_span(step.span_id)
        order = int(line["message"].rsplit(" ", 1)[1])
        assert step.attributes["keel.step.output"] == f"charged-{order}"
        seen.add(line["step"])
    assert seen == {"charge#0", "map:charge#0/0", "map:charge#0/1", "map:charge#0/2"}


async def test_trace_context_filter_on_any_handler(make_app: Callable[..., keel.App]) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger("tests.observe.filter")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app = make_app()

    @app.tool
    async def risky(x: int) -> int:
        try:
            raise KeyError(x)
        except KeyError:
            logger.exception("lookup failed")
        return x

    @app.workflow
    async def wf(ctx: keel.Context) -> int:
        return await ctx.call(risky, 3)  # type: ignore[no-any-return]

    try:
        handle = await app.start(wf, {})
        assert await handle.result(WAIT) == 3
    finally:
        logger.removeHandler(handler)
    [rec] = records
    assert rec.span_id == ids.hex_span(ids.step_span_id(handle.id, "risky#0"))  # type: ignore[attr-defined]
    assert rec.trace_id == ids.hex_trace(ids.trace_id(handle.id))  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(rec))
    assert line["step"] == "risky#0" and "KeyError" in line["exception"]
    spans = await app.trace(handle.id)
    assert rec.span_id in {ids.hex_span(s.span_id) for s in spans}  # type: ignore[attr-defined]


# -- metrics --------------------------------------------------------------------------------


def points(reader: Any, name: str, **match: Any) -> list[Any]:
    """Data points of metric `name` whose attributes include `match`."""
    out = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for p in metric.data.data_points:
                    if all(p.attributes.get(k) == v for k, v in match.items()):
                        out.append(p)
    return out


def total(reader: Any, name: str, **match: Any) -> float:
    return sum(p.value for p in points(reader, name, **match))


async def test_metrics_runs_steps_retries_fallbacks_tokens_and_cost(
    metric_reader: Any, store_url: str
) -> None:
    model = ScriptedModel(lambda m: "a short reply", price_as="gpt-4o-mini")
    app = keel.App(
        store_url,
        settings=Settings(poll_interval=0.02),
        llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)),
    )
    faults = Faults()
    flaky = faults.tool(
        app, "m_flaky", Schedule("503", "503", "ok"), retry=keel.Retry(attempts=4, backoff=0.001)
    )
    down = faults.tool(
        app,
        "m_down",
        Always("503"),
        retry=keel.Retry(attempts=2, backoff=0.001),
        fallback=keel.Fallback.degrade(default=0),
    )
    plain = faults.tool(app, "m_plain", Schedule())
    broken = faults.tool(app, "m_broken", Always("value"))

    @app.workflow
    async def m_good(ctx: keel.Context) -> list[Any]:
        a = await ctx.call(flaky, 1)
        b = await ctx.call(down, 2)
        go = await ctx.wait_for("go")  # a suspension and a replay: nothing counted twice
        c = await ctx.call(plain, go)
        d = await ctx.llm.text("Summarise the quarter.")
        e = await ctx.llm.text("And the year.")
        return [a, b, c, d, e]

    @app.workflow
    async def m_bad(ctx: keel.Context) -> Any:
        await ctx.call(plain, 0)
        return await ctx.call(broken, 1)

    try:
        good = await app.start(m_good, {})
        assert (await good.settle(RESULT)).status is RunStatus.WAITING
        await good.signal("go", 3)
        assert (await good.result(RESULT))[:3] == [1, 0, 3]
        bad = await app.start(m_bad, {})
        with pytest.raises(keel.RunFailed):
            await bad.result(WAIT)
        llm_steps = [s for s in await app.steps(good.id) if s.kind.value == "llm"]
        await app.trace(good.id)
    finally:
        await app.close()

    # runs by status: each run once, when it ended (the suspension is not an end)
    assert total(metric_reader, "keel.runs", **{"gen_ai.workflow.name": "m_good"}) == 1
    assert points(
        metric_reader,
        "keel.runs",
        **{"gen_ai.workflow.name": "m_good", "keel.run.status": "SUCCEEDED"},
    )
    assert (
        total(
            metric_reader,
            "keel.runs",
            **{"gen_ai.workflow.name": "m_bad", "keel.run.status": "FAILED"},
        )
        == 1
    )

    # step latency, by kind and name: one sample per step, replays not counted again
    [flaky_latency] = points(metric_reader, "keel.step.duration", **{"keel.step.name": "m_flaky"})
    assert flaky_latency.count == 1 and flaky_latency.sum > 0
    assert flaky_latency.attributes["keel.step.kind"] == "tool"
    [plain_latency] = points(metric_reader, "keel.step.duration", **{"keel.step.name": "m_plain"})
    assert plain_latency.count == 2  # once in each run
    [llm_latency] = points(metric_reader, "keel.step.duration", **{"keel.step.name": "llm:text"})
    assert llm_latency.count >= 2

    # retries: the attempts after the first
    assert total(metric_reader, "keel.step.retries", **{"keel.step.name": "m_flaky"}) == 2
    assert total(metric_reader, "keel.step.retries", **{"keel.step.name": "m_down"}) == 1
    assert not points(metric_reader, "keel.step.retries", **{"keel.step.name": "m_plain"})
    # fallbacks taken
    assert (
        total(
            metric_reader,
            "keel.step.fallbacks",
            **{"keel.step.name": "m_down", "keel.fallback": "degrade"},
        )
        == 1
    )

    # tokens and cost by model, matching what the journal metered
    by_model = {"gen_ai.request.model": model.name}
    want_in = sum(s.output["usage"]["input_tokens"] for s in llm_steps)
    want_out = sum(s.output["usage"]["output_tokens"] for s in llm_steps)
    want_cost = sum(s.output["cost_usd"] for s in llm_steps)
    [tok_in] = points(
        metric_reader, "gen_ai.client.token.usage", **by_model, **{"gen_ai.token.type": "input"}
    )
    [tok_out] = points(
        metric_reader, "gen_ai.client.token.usage", **by_model, **{"gen_ai.token.type": "output"}
    )
    assert tok_in.count == 2 and tok_in.sum == want_in > 0
    assert tok_out.count == 2 and tok_out.sum == want_out > 0
    assert tok_in.attributes["gen_ai.provider.name"] == "keel-scripted"
    assert tok_in.attributes["gen_ai.operation.name"] == "chat"
    assert total(metric_reader, "keel.cost.usd", **by_model) == pytest.approx(want_cost)
    assert want_cost > 0


async def test_metrics_with_an_explicit_meter(store_url: str) -> None:
    """`keel.observe.metrics.Metrics(meter)` records into any MeterProvider's meter."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from keel.observe.metrics import Metrics, MetricsHook

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("keel-test")
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))
    app.hooks.add(MetricsHook(Metrics(meter)))  # metrics into a meter of your choosing
    faults = Faults()
    tool = faults.tool(app, "x_tool", Schedule("500", "ok"), retry=keel.Retry(backoff=0.001))

    @app.workflow
    async def x_wf(ctx: keel.Context) -> int:
        return await ctx.call(tool, 1)  # type: ignore[no-any-return]

    try:
        handle = await app.start(x_wf, {})
        assert await handle.result(WAIT) == 1
        await app.trace(handle.id)
    finally:
        await app.close()
    assert total(reader, "keel.runs", **{"keel.run.status": "SUCCEEDED"}) == 1
    assert total(reader, "keel.step.retries", **{"keel.step.name": "x_tool"}) == 1
    assert points(reader, "keel.step.duration", **{"keel.step.name": "x_tool"})[0].count == 1
