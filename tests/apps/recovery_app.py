"""Workflows for the recovery crash tests and the `keel escalations` CLI tests.

`build(store_url)` returns a fresh App, shared by the test process (which starts
runs and reads the journal) and worker subprocesses
(`python -m tests.apps.run_worker tests.apps.recovery_app`). Fault-injecting
tools (tests/faults.py) append every attempt to $KEEL_TEST_DIR/attempts.log, so
attempts made by a worker that was SIGKILLed are still counted. The CLI tests
load this file by path (`keel run tests/apps/recovery_app.py:lookup`), which
uses the module-level `app` bound to $KEEL_STORE.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

import keel
from tests.faults import Always, Faults, Schedule


class Account(BaseModel):
    id: str
    tier: str


class Figures(BaseModel):
    figures: list[int] = []
    total: int = 0


def totals_add_up(s: Figures) -> str | None:
    if sum(s.figures) != s.total:
        return f"figures sum to {sum(s.figures)}, not the stated total {s.total}"
    return None


def attempts_log() -> Path | None:
    data = os.environ.get("KEEL_TEST_DIR")
    return Path(data) / "attempts.log" if data else None


def build(store: str | None = None) -> keel.App:
    app = keel.App(store)
    faults = Faults(log=attempts_log())

    # Fails with 503 twice, then answers: the retry schedule comes from the workflow.
    flaky = faults.tool(app, "flaky", Schedule("503", "503"))

    @app.workflow
    async def backoff(ctx: keel.Context, backoff: float, attempts: int = 4) -> str:
        retry = keel.Retry(attempts=attempts, backoff=backoff, jitter=False)
        return await ctx.call(flaky.with_options(retry=retry), "charged")

    # A phase whose first attempt fails its checkpoint; the second one blocks for
    # $KEEL_TEST_BLOCK seconds in `block` (a worker can be killed there).
    answers = {0: [9], 1: [1, 2, 3]}
    extract = faults.tool(app, "extract", Schedule(), result=lambda n: answers[n])

    blocker = Faults(log=attempts_log(), slow=float(os.environ.get("KEEL_TEST_BLOCK", "0")))
    block = blocker.tool(app, "block", Always("slow"))  # recorded, then sleeps

    @app.workflow(state=Figures)
    async def phased(ctx: keel.Context) -> list[int]:
        ctx.state.total = 6
        async for attempt in ctx.phase("extract", check=totals_add_up, retries=2):
            async with attempt:
                ctx.state.figures = await ctx.call(extract, attempt.number)
                if attempt.number == 1:
                    await ctx.call(block, attempt.number)
        return ctx.state.figures

    # For `keel escalations`: a lookup that always fails and goes to a person.
    lookup_account = faults.tool(
        app,
        "lookup_account",
        Always("503"),
        returns=Account,
        retry=keel.Retry(attempts=2, backoff=0.001),
        fallback=keel.Fallback.human(queue="accounts"),
    )

    @app.workflow
    async def lookup(ctx: keel.Context, account_id: str) -> str:
        account = await ctx.call(lookup_account, account_id)
        return f"{account.id}:{account.tier}"

    @app.workflow(state=Figures)
    async def review(ctx: keel.Context) -> dict[str, object]:
        async with ctx.phase("extract", check=totals_add_up, on_fail="escalate"):
            ctx.state.figures = [1, 2]
            ctx.state.total = 4
        return ctx.state.model_dump()

    return app


app = build(os.environ["KEEL_STORE"]) if "KEEL_STORE" in os.environ else None
