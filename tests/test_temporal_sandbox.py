"""Temporal's sandbox on Keel's generic workflow (a real dev server, every task replayed).

A workflow that reads the clock, random or a file directly, instead of through `ctx`,
fails at its first run with a Keel error naming the workflow, the call and what to use
instead; the same work through `ctx` (or a tool) runs; `Backend(sandbox=False)` is the
escape hatch. The behaviour suite (tests/test_temporal_behaviour.py) runs sandboxed.
"""

from __future__ import annotations

import asyncio
import os
import random
import socketserver  # noqa: F401  (binds time.monotonic too: must not rename a refusal)
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from time import monotonic
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from tests.limits import WAIT

HERE = str(Path(__file__))


def read_first_line(path: str) -> str:  # a tool: effects belong in tools
    with open(path) as f:
        return f.readline().strip()


async def reads_clock(ctx: keel.Context) -> float:
    return time.time()


async def reads_clock_by_name(ctx: keel.Context) -> float:
    def stamp() -> float:  # nested in the workflow: it runs over the same globals
        return monotonic()  # a member imported by name is restricted as the module is

    return stamp()


async def reads_datetime(ctx: keel.Context) -> str:
    return datetime.now().isoformat()


async def draws_random(ctx: keel.Context) -> float:
    return random.random()


async def opens_file(ctx: keel.Context) -> str:
    with open(HERE) as f:
        return f.readline()


async def reads_env(ctx: keel.Context) -> str | None:
    return os.environ.get("HOME")


async def reads_path(ctx: keel.Context) -> str:
    return Path(HERE).read_text()[:10]


async def through_ctx(ctx: keel.Context) -> dict[str, Any]:
    line = await ctx.call(read_first_line, HERE)
    return {
        "now": ctx.now().year > 2000,
        "random": 0 <= ctx.random() < 1,
        "uuid": len(str(ctx.uuid())),
        "line": line,
        "built": datetime(2026, 1, 1).year,  # building a datetime is fine; now() is not
    }


REFUSED = {
    "reads_clock": ("time.time", "ctx.now()"),
    "reads_clock_by_name": ("time.monotonic", "ctx.now()"),
    "reads_datetime": ("datetime.datetime.now", "ctx.now()"),
    "draws_random": ("random.random", "ctx.random()"),
    "opens_file": ("open", "a tool"),
    "reads_env": ("os.environ.get", "a tool"),
    "reads_path": ("pathlib.Path.read_text", "a tool"),
}


def _app(store_url: str) -> keel.App:
    app = keel.App(store_url)
    app.tool(read_first_line)
    for wf in (
        reads_clock,
        reads_clock_by_name,
        reads_datetime,
        draws_random,
        opens_file,
        reads_env,
        reads_path,
    ):
        app.workflow(wf)
    app.workflow(through_ctx)
    return app


@pytest.fixture
async def hosted(
    temporal_address: str, store_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[keel.App, Any, Backend]]:
    app = _app(store_url)
    backend = Backend(
        address=temporal_address,
        task_queue=f"q-{uuid.uuid4().hex[:12]}",
        sandbox=getattr(request, "param", True),
    )
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        yield app, client, backend
    await app.close()


async def _outcome(hosted: tuple[keel.App, Any, Backend], workflow: str) -> Any:
    app, client, backend = hosted
    rid = await start(app, client, backend, workflow, {})
    return await asyncio.wait_for(result(app, client, rid), WAIT)


async def test_direct_reads_fail_the_first_run_with_what_to_use_instead(
    hosted: tuple[keel.App, Any, Backend],
) -> None:
    async def refused(workflow: str) -> keel.RunFailed:
        with pytest.raises(keel.RunFailed) as caught:
            await _outcome(hosted, workflow)
        return caught.value

    failures = await asyncio.gather(*(refused(name) for name in REFUSED))
    for name, exc in zip(REFUSED, failures, strict=True):
        call, instead = REFUSED[name]
        assert exc.error is not None and exc.error.type == "ConfigError", (name, exc.error)
        message = exc.error.message
        assert f"workflow {name!r} called {call}" in message, message
        assert "Temporal's sandbox refuses" in message and instead in message, message
        assert "Backend(sandbox=False)" in message, message
    # the same work through ctx and a tool runs in the sandbox
    done = await _outcome(hosted, "through_ctx")
    assert done == {
        "now": True,
        "random": True,
        "uuid": 36,
        "line": '"""Temporal\'s sandbox '
        "on Keel's generic workflow (a real dev server, every task replayed).",
        "built": 2026,
    }


@pytest.mark.parametrize("hosted", [False], indirect=True)
async def test_backend_sandbox_false_is_the_escape_hatch(
    hosted: tuple[keel.App, Any, Backend],
) -> None:
    # unsandboxed, a direct read is not stopped (nor replayed: it is the user's risk)
    assert isinstance(await _outcome(hosted, "reads_clock"), float)
    assert hosted[2].url.endswith("&sandbox=off")
    assert Backend.from_url(hosted[2].url).sandbox is False


def test_a_bad_sandbox_option_is_refused() -> None:
    with pytest.raises(keel.ConfigError, match="sandbox takes on or off"):
        Backend.from_url("temporal://localhost:7233/default?sandbox=maybe")
    with pytest.raises(keel.ConfigError, match=r"sandbox=\.\.\.\) takes True or False"):
        Backend(sandbox="no")  # type: ignore[arg-type]


async def test_serialization_contexts_are_read_without_entering_the_sandbox(
    hosted: tuple[keel.App, Any, Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keel's runner (keel/backends/temporal/runner.py) answers temporalio's question
    "which context is this payload in" outside the sandbox's exec: workflow code still
    runs through it, and the answers are temporalio's (the activity's and the workflow's
    contexts reach the converter)."""
    from temporalio.converter import ActivitySerializationContext
    from temporalio.worker.workflow_sandbox._runner import _Instance

    from keel.backends.temporal.converter import _converter_class

    entered: list[str] = []
    run_code = _Instance._run_code

    def counting(self: Any, code: str, **extra: Any) -> None:
        entered.append(code)
        run_code(self, code, **extra)

    contexts: list[Any] = []
    in_context = _converter_class()._in_context

    def seeing(self: Any, context: Any) -> Any:
        contexts.append(context)
        return in_context(self, context)

    monkeypatch.setattr(_Instance, "_run_code", counting)
    monkeypatch.setattr(_converter_class(), "_in_context", seeing)
    assert (await _outcome(hosted, "through_ctx"))["line"].startswith('"""Temporal')
    assert any("activate" in code for code in entered)  # workflow code: in the sandbox
    assert not any("serialization_context" in code for code in entered)
    assert not any("external_store_context" in code for code in entered)
    called = [c for c in contexts if isinstance(c, ActivitySerializationContext)]
    assert any(c.activity_type == "keel.call" for c in called), contexts
