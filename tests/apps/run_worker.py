"""Run one Keel worker for a test app: `python -m tests.apps.run_worker tests.apps.crash_app`.

The module must define `build(store_url) -> keel.App`; the store comes from
$KEEL_STORE. SIGTERM/SIGINT cancel `serve()`, which is `Worker.stop()`: running
runs go back to the queue at once (their steps in flight run again) and the
process exits 0. `keel worker` drains instead (tests/test_worker_drain.py). SIGUSR1 runs a full
`gc.collect()` (+ glibc `malloc_trim`) and then appends a line to
$KEEL_TEST_DIR/gc.log, so a test can read a settled RSS. When $KEEL_TEST_READY
is set, that file is created once the worker has started polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import os
import signal
import sys
from pathlib import Path


def _collect() -> None:
    for _ in range(3):
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    out = os.environ.get("KEEL_TEST_DIR")
    if out:
        with open(Path(out) / "gc.log", "a") as f:
            f.write(f"{os.getpid()}\n")


async def main(module_name: str) -> None:
    mod = importlib.import_module(module_name)
    app = mod.build(os.environ["KEEL_STORE"])
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, me.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _collect)
    worker = app.worker()
    try:
        await worker.start()
        ready = os.environ.get("KEEL_TEST_READY")
        if ready:
            Path(ready).touch()
        await worker.serve()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.stop()
        await app.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.apps.run_worker <module defining build()>")
    asyncio.run(main(sys.argv[1]))
