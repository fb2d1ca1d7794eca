"""Shared fixtures: a fresh store per test (on the backend `KEEL_TEST_STORE` picks, see
tests/backends.py) and Apps that are closed afterwards."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.store import Store

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:  # `tests.*` must import under plain `pytest` too
    sys.path.insert(0, _REPO)

from tests.backends import UnknownBackend, backend, fresh_url  # noqa: E402
from tests.limits import WAIT  # noqa: E402

SETTLE_TIMEOUT = WAIT  # "until the engine got there": a bound, never a timing


@pytest.fixture(scope="session", autouse=True)
def _litellm_imported() -> None:
    """Import LiteLLM once per session, before any test's waits start: its cold import
    takes 15-30 s on a loaded 2-core machine, more than a test should have to absorb.
    (Worker subprocesses still import it themselves; their waits allow for that.)"""
    from keel.llm._litellm import litellm

    litellm()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an unknown KEEL_TEST_STORE before collecting anything, naming the known ones."""
    try:
        backend()
    except UnknownBackend as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"store backend: {backend().name} (KEEL_TEST_STORE)"


@pytest.fixture
def store_url(tmp_path: Any) -> str:
    """A fresh store URL on this session's backend (tests/backends.py)."""
    return fresh_url(tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A fresh, open store on this session's backend; closed at teardown."""
    from keel.store import open_store

    opened = open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def make_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    """Build Apps on this test's store with fast polling; all are closed at teardown.

    `make_app(large_output_bytes=1024)` overrides any `Settings` field.
    """
    apps: list[keel.App] = []

    def make(**overrides: Any) -> keel.App:
        settings = Settings(**{"poll_interval": 0.02, **overrides})
        app = keel.App(store_url, settings=settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    """`await wait_until(predicate)`: poll until true (fails the test after a generous bound)."""

    async def wait(pred: Callable[[], Any], what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        while True:
            value = pred()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if loop.time() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            await asyncio.sleep(0.005)

    return wait


# -- worker subprocesses (tests/test_crash_recovery.py, tests/test_workers.py) ----------


@pytest.fixture
async def worker_harness(tmp_path: Any) -> AsyncIterator[Any]:
    """Worker subprocesses on a fresh store; every one spawned is stopped at teardown.

    See tests/apps/harness.py: `spawn()`, `kill()`, `terminate()`, `executions()`,
    `effects()`, `wait_status()`.
    """
    from tests.apps.harness import Harness

    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for this test session."""
    from tests.services.redis_server import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


# -- observability (tests/test_observe_*.py) -------------------------------------------

_OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SERVICE_NAME",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)


def _otlp_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, protocol: str) -> None:
    for name in _OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)


@pytest.fixture
def otlp_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real OTLP/HTTP receiver (tests/services/otlp_receiver.py), with the standard
    OTEL_EXPORTER_OTLP_* variables pointing at it. Create Apps after requesting it:
    an App builds its exporter from the environment when its runtime starts."""
    from tests.services.otlp_receiver import http_receiver

    with http_receiver() as rx:
        _otlp_env(monkeypatch, rx.endpoint, "http/protobuf")
        yield rx


@pytest.fixture
def otlp_grpc(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real OTLP/gRPC receiver, with OTEL_EXPORTER_OTLP_PROTOCOL=grpc pointing at it."""
    from tests.services.otlp_receiver import grpc_receiver

    with grpc_receiver() as rx:
        _otlp_env(monkeypatch, rx.endpoint, "grpc")
        yield rx


@pytest.fixture(scope="session")
def metric_reader() -> Any:
    """An InMemoryMetricReader behind the global OpenTelemetry MeterProvider (set once per
    session: the API allows no second one). Filter data points by attributes unique to
    the test (tool, workflow and model names)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        pytest.skip("another global MeterProvider is already installed in this process")
    return reader


# -- Temporal (tests/test_temporal_*.py) --------------------------------------------------


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The Temporal SDK's known interpreter-exit crash: once its Rust runtime has run in
    a process, Python's finalization can abort with "PyGILState_Release: thread state
    ... must be current" (exit 134, or 139) after everything passed; measured here in 3
    of 6 runs of a program using `WorkflowEnvironment.start_local`. The crash is in
    finalization only, so a session that loaded the SDK skips it: this is pytest's last
    hook (the summary is printed, every fixture torn down, the dev server stopped), and
    the process exits at once with pytest's own status. A failing session still fails."""
    if _exit_status and "temporalio.bridge.temporal_sdk_bridge" in sys.modules:
        # os._exit skips atexit: stop the Postgres servers here (their data would stay).
        if "tests.services.postgres" in sys.modules:
            sys.modules["tests.services.postgres"].stop_all()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Temporal dev server (tests/services/temporal.py) for this test session."""
    from tests.services.temporal import temporal_server

    with temporal_server(tmp_path_factory.mktemp("temporal")) as address:
        yield address
