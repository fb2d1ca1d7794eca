"""An agent workflow for the SIGKILL test of ctx.llm (tests/test_llm_crash.py).

`build(store_url)` returns the App; workers run it with
`python -m tests.apps.run_worker tests.apps.llm_app`. The scripted model and the
tool append one line per call to $KEEL_TEST_DIR/llm.log (`model <turn> <pid>` /
`tool <n> <pid>`), so the test can see exactly what was sent and run.

The model asks for `step(n)` on turns 1..TURNS-1, then answers. To hold the worker
at a chosen point, set KEEL_TEST_BLOCK_AT to `tool:<n>` (the tool sleeps) or
`model:<turn>` (the model call sleeps) and KEEL_TEST_BLOCK to the seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import keel
from keel.llm import Gateway, Reply, ScriptedModel

TURNS = 4  # three tool turns, then the answer


def _log(what: str, n: int) -> None:
    out = os.environ.get("KEEL_TEST_DIR")
    if out:
        with open(Path(out) / "llm.log", "a") as f:
            f.write(f"{what} {n} {os.getpid()}\n")


def _blocks(what: str, n: int) -> float:
    if os.environ.get("KEEL_TEST_BLOCK_AT") == f"{what}:{n}":
        return float(os.environ.get("KEEL_TEST_BLOCK", "0"))
    return 0.0


def script(messages: list[dict[str, Any]]) -> Reply:
    turn = 1 + sum(1 for m in messages if m["role"] == "tool")
    _log("model", turn)
    time.sleep(_blocks("model", turn))  # holds the whole worker: it is about to be killed
    if turn < TURNS:
        return Reply(tool_calls=[{"name": "step", "arguments": {"n": turn}}])
    return Reply(content=f"done after {turn - 1} steps")


def build(store: str | None = None) -> keel.App:
    model = ScriptedModel(script, name="llm-crash-model")
    # No response cache: a re-sent turn must show up as a model call, not a cache hit.
    gateway = Gateway({"m": model}, cache=False, retry=keel.Retry(attempts=1))
    app = keel.App(store, llm=gateway)

    @app.tool
    async def step(n: int) -> dict[str, int]:
        """Do step n of the job."""
        _log("tool", n)
        await asyncio.sleep(_blocks("tool", n))
        return {"n": n, "squared": n * n}

    @app.workflow
    async def job(ctx: keel.Context) -> dict[str, Any]:
        res = await ctx.llm.agent("Do the three steps.", tools=[step], max_turns=TURNS)
        return {"content": res.content, "turns": res.turns}

    return app
