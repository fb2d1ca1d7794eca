"""Irreversible tools served by a Temporal worker in a subprocess (tests/test_temporal_tools.py).

    python -m keel.backends.temporal tests.apps.temporal_tools_app --backend temporal://...

Each effect appends `<idempotency key> <pid>` to `$KEEL_TEST_DIR/effects.log` (one
O_APPEND write: the outside system). With `KEEL_TEST_DIE=1` the worker SIGKILLs itself
right after the effect, before its outcome is recorded anywhere: mid-effect, as far as
Keel and Temporal can tell.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import keel

# a short timeout: Temporal gives the dead worker's attempt up after 1.5 x this + 5 s
_RETRY = keel.Retry(attempts=2, backoff=0.01)


def _log() -> Path:
    return Path(os.environ["KEEL_TEST_DIR"]) / "effects.log"


def _effect() -> str:
    step = keel.current_step()
    assert step is not None
    fd = os.open(_log(), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{step.idempotency_key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    if os.environ.get("KEEL_TEST_DIE") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return f"sent by {os.getpid()}"


async def send(to: str) -> str:
    return _effect()


async def send_checked(to: str) -> str:
    return _effect()


async def was_sent(idempotency_key: str, to: str) -> str:
    """The reconcile hook: ask the outside system whether the effect happened."""
    lines = _log().read_text().splitlines() if _log().exists() else []
    for line in lines:
        key, pid = line.split()
        if key == idempotency_key:
            return f"sent by {pid} (reconciled)"
    raise keel.EffectNotApplied(f"no effect under {idempotency_key}")


async def notify(ctx: keel.Context, to: str) -> str:
    return str(await ctx.call(send, to))


async def notify_checked(ctx: keel.Context, to: str) -> str:
    return str(await ctx.call(send_checked, to))


def build(store: str | None = None) -> keel.App:
    """The App on `store` (None: KEEL_STORE, which the test sets for the worker too)."""
    app = keel.App(store)
    app.tool(irreversible=True, approval=False, retry=_RETRY, timeout=1)(send)
    app.tool(irreversible=True, approval=False, reconcile=was_sent, retry=_RETRY, timeout=1)(
        send_checked
    )
    app.workflow(notify)
    app.workflow(notify_checked)
    return app


app = build()
