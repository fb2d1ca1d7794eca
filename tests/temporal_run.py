"""Running a workflow to its end on each executor, with its outcome normalised.

`("ok", result)` or `("failed", error type, failing step)`: what the behaviour suite
compares between Keel's engine and Temporal.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, signal, start
from tests.limits import WAIT


@dataclass
class OnTemporal:
    """An App hosted by a Temporal worker on its own task queue (every task replays)."""

    app: keel.App
    client: Any
    backend: Backend

    async def run(
        self,
        workflow: str,
        input: dict[str, Any],
        signals: Sequence[tuple[str, Any]] = (),
        run_id: str | None = None,
        **options: Any,
    ) -> tuple[Any, ...]:
        rid = await start(
            self.app, self.client, self.backend, workflow, input, run_id=run_id, **options
        )
        for name, payload in signals:
            await signal(self.client, rid, name, payload)
        try:
            value = await asyncio.wait_for(result(self.app, self.client, rid), WAIT)
        except keel.RunFailed as exc:
            assert exc.error is not None
            return ("failed", exc.error.type, exc.error.step)
        return ("ok", value)


async def stored_end(app: keel.App, rid: str) -> keel.RunInfo:
    """Run `rid` once Keel's store has its end: the store only, never Temporal (what the
    worker wrote, not what a read of the run would learn)."""

    async def poll() -> keel.RunInfo:
        while True:
            info = await app.store.get_run(rid)
            if info is not None and info.status.terminal:
                return info
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT)


@asynccontextmanager
async def on_temporal(app: keel.App, address: str) -> AsyncIterator[OnTemporal]:
    backend = Backend(address=address, task_queue=f"q-{uuid.uuid4().hex[:12]}")
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        yield OnTemporal(app, client, backend)


def executor_fixtures(build: Callable[..., keel.App]) -> tuple[Any, Any]:
    """A behaviour file's two fixtures: `temporal`, the App `build(store_url)` makes,
    hosted by a Temporal worker; `keel_app`, the same App on Keel's engine.

    Example:
        temporal, keel_app = executor_fixtures(build)
    """

    @pytest.fixture(name="temporal")
    async def temporal(temporal_address: str, store_url: str) -> AsyncIterator[OnTemporal]:
        app = build(store_url)
        async with on_temporal(app, temporal_address) as t:
            yield t
        await app.close()

    @pytest.fixture(name="keel_app")
    async def keel_app(store_url: str) -> AsyncIterator[keel.App]:
        from keel.engine.runtime import Settings

        app = build(store_url, settings=Settings(poll_interval=0.02))
        yield app
        await app.close()

    return temporal, keel_app


async def on_keel(
    app: keel.App,
    workflow: str,
    input: dict[str, Any],
    signals: Sequence[tuple[str, Any]] = (),
    **options: Any,
) -> tuple[Any, ...]:
    """Run on Keel's own engine (the App's embedded worker)."""
    handle = await app.start(workflow, input, **options)
    for name, payload in signals:
        await handle.signal(name, payload, queue=True)
    try:
        value = await asyncio.wait_for(handle.result(), WAIT)
    except keel.RunFailed as exc:
        assert exc.error is not None
        return ("failed", exc.error.type, exc.error.step)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return ("ok", value)
