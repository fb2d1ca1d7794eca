"""Workflows for the human-in-the-loop tests: approval gates, deadlines, parked runs.

`build(store_url)` returns a fresh App, so the test process (which starts runs and
decides requests) and the worker subprocesses (`python -m tests.apps.run_worker
tests.apps.hitl_app`) share one definition. Tools write to $KEEL_TEST_DIR (see
tests/apps/effects.py): one exec.log line per execution, one effect file per
idempotency key. A tool holds (before or after its effect) while the file
`$KEEL_TEST_DIR/hold/<account>.before` (or `.after`) exists, so a test can SIGKILL
the worker at that point and remove the file before restarting it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import keel
from keel.hitl import Approval, Escalate, Sample
from tests.apps.effects import apply_effect, data_dir, log_execution

BALLAST_BYTES = 64 * 1024  # held across the approval wait by `parked`; a leaked frame shows
REVIEWERS = {"payments": {"alice"}, "refunds": {"alice"}, "leads": {"carol"}}


def receipt(account: str, amount: int) -> str:
    return f"paid {amount} to {account}"


def hold_file(account: str, when: str) -> Path:
    return data_dir() / "hold" / f"{account}.{when}"


async def _hold(account: str, when: str) -> None:
    while hold_file(account, when).exists():
        await asyncio.sleep(0.01)


def effect_done(key: str) -> bool:
    return (data_dir() / "effects" / quote(key, safe="")).exists()


def _die_after_expiry(app: keel.App) -> None:
    """SIGKILL this worker right after it stored a request's expiry (before the step's
    failure is journaled): the narrowest crash window of a timeout policy."""
    store: Any = app.store
    real = store.decide_review

    async def decide_then_die(review_id: str, status: str, *args: Any, **kwargs: Any) -> Any:
        out = await real(review_id, status, *args, **kwargs)
        if status == "expired":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    store.decide_review = decide_then_die


class _DieAfterDecision(keel.Hooks):
    """SIGKILL this worker as soon as a run has journaled a decision it received, before
    the approved tool records its intent: the run has resumed, the tool has not started."""

    def step_recorded(self, ev: Any) -> None:
        if ev.key.endswith("/decision#0") and ev.record.status.value == "ok":
            os.kill(os.getpid(), signal.SIGKILL)


def build(store: str | None = None) -> keel.App:
    app = keel.App(store, reviewers=REVIEWERS)
    if os.environ.get("KEEL_TEST_DIE_AFTER_EXPIRY"):
        _die_after_expiry(app)
    if os.environ.get("KEEL_TEST_DIE_AFTER_DECISION"):
        app.hooks.add(_DieAfterDecision())

    async def check_paid(key: str, account: str, amount: int) -> str:
        """Reconcile: did the interrupted payment happen? (The effect file says.)"""
        if effect_done(key):
            return receipt(account, amount)
        raise keel.EffectNotApplied(f"no payment recorded under {key}")

    @app.tool(
        irreversible=True,
        reconcile=check_paid,
        approval=Approval(queue="payments", reason="money leaves the company"),
    )
    async def pay(account: str, amount: int) -> str:
        log_execution()
        await _hold(account, "before")
        apply_effect()
        await _hold(account, "after")
        return receipt(account, amount)

    @app.tool(irreversible=True)  # default approval gate, no reconcile hook
    async def wire(account: str, amount: int) -> str:
        log_execution()
        await _hold(account, "before")
        apply_effect()
        return receipt(account, amount)

    @app.tool(approval=Approval(queue="grants"))
    async def grant(n: int) -> int:
        return n

    @app.workflow
    async def payout(ctx: keel.Context, account: str, amount: int) -> str:
        return await ctx.call(pay, account, amount)

    @app.workflow
    async def wire_out(ctx: keel.Context, account: str, amount: int) -> str:
        return await ctx.call(wire, account, amount)

    @app.workflow
    async def deadline(
        ctx: keel.Context,
        policy: str,
        timeout: float,
        escalate_timeout: float | None = None,
        then: str = "reject",
        catch: bool = True,
    ) -> str:
        on_timeout: Any = policy
        if policy == "escalate":
            on_timeout = Escalate("leads", escalate_timeout, then)  # type: ignore[arg-type]
        try:
            decision = await ctx.approval(
                {"tool": "refund", "args": {"order": "o-1", "amount": 30}},
                context={"order": "o-1", "customer": "c-9"},
                reason="refunds over 20 need a person",
                queue="refunds",
                timeout=timeout,
                on_timeout=on_timeout,
            )
        except keel.KeelError as exc:
            if catch:  # a "fail" policy must fail the run even so
                return f"caught {type(exc).__name__}: {exc}"
            raise
        return f"approved by {decision.by}"

    @app.workflow
    async def parked(ctx: keel.Context, n: int) -> int:
        ballast = bytearray(BALLAST_BYTES)  # lives in this frame across the approval wait
        got = await ctx.call(grant, n)
        return got + len(ballast)

    @app.workflow(sample=Sample(rate=1.0, queue="qa"))
    async def label(ctx: keel.Context, text: str) -> str:
        return "billing" if "refund" in text else "general"

    return app
