"""Context tokens per model call of a long agent run, with and without the assembler.

A 40-turn agent (a scripted model, so the figures are the same on every machine) calls
a tool whose output is a ~1,840-token record each turn. Without a budget every call
resends the whole conversation, so its context grows with every turn; with
`budget=8000` the assembler keeps the system message and the task pinned and the newest
turns (a tool call with its result) that fit. A third run cuts the tool's output to the
two fields that matter (`@app.tool(keep=...)`), without a budget: it still grows, but
~47 times slower (39 tokens a turn instead of 1,844). Tokens are counted the model's way
(LiteLLM's tokenizer, tool schemas included) on the messages the model was sent.

    python bench/_memory_context.py          # prints the table
    bench/memory.py calls context_section()  # rows for its report
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TURNS = 40
BUDGET = 8000
CHECKPOINTS = (1, 5, 10, 20, 30, 40)


async def _run(budget: int | None, keep: bool = False) -> list[int]:
    """Context tokens of each model call of one long agent run (`keep`: the tool's
    output cut to two fields with `@app.tool(keep=...)`)."""
    from pydantic import BaseModel

    import keel
    from keel.llm import Gateway, Reply, ScriptedModel
    from keel.llm.facade import _tool_schema
    from keel.memory.tokens import TokenCounter

    turn = {"n": 0}

    def script(messages: list[dict[str, Any]]) -> Reply:
        turn["n"] += 1
        if turn["n"] <= TURNS:
            return Reply(tool_calls=[{"name": "inspect", "arguments": {"host": turn["n"]}}])
        return Reply(content=f"inspected {TURNS} hosts")

    model = ScriptedModel(script)
    with tempfile.TemporaryDirectory() as tmp:
        app = keel.App(f"sqlite:///{tmp}/bench.db", llm=Gateway({"m": model}))

        class HostView(BaseModel):
            host: int
            status: str

        @app.tool(keep=HostView if keep else None)
        async def inspect(host: int) -> dict[str, Any]:
            """Inspect one host: its full diagnostic record."""
            return {
                "host": host,
                "status": "degraded" if host % 7 == 0 else "ok",
                "log": [f"line {i}: disk latency {i * 3} ms, queue {i % 5}" for i in range(120)],
            }

        @app.workflow
        async def sweep(ctx: keel.Context) -> str | None:
            res = await ctx.llm.agent(
                "Inspect every host and report the degraded ones.",
                tools=[inspect],
                system="You are an SRE agent.",
                max_turns=TURNS + 2,
                budget=budget,
            )
            return res.content

        await (await app.start(sweep, {})).result(600)
        tools = [_tool_schema(app.registry.tools["inspect"])]
        await app.close()
    counter = TokenCounter()
    return [counter.count(c["messages"], tools) for c in model.calls]


def context_section() -> list[dict[str, Any]]:
    """Rows: context tokens at some turns of the run, naive and assembled."""
    naive = asyncio.run(_run(None))
    fitted = asyncio.run(_run(BUDGET))
    kept = asyncio.run(_run(None, keep=True))
    series = {
        "naive tokens": naive,
        f"assembled tokens (budget {BUDGET})": fitted,
        "keep= 2 fields, no budget": kept,
    }
    rows: list[dict[str, Any]] = [
        {"turn": t, **{name: v[t - 1] for name, v in series.items()}} for t in CHECKPOINTS
    ]
    rows.append({"turn": f"max of {len(naive)} calls", **{n: max(v) for n, v in series.items()}})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    width = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, width, strict=True))
    out = [line, "  ".join("-" * w for w in width)]
    out += ["  ".join(str(r[c]).ljust(w) for c, w in zip(cols, width, strict=True)) for r in rows]
    return "\n".join(out)


if __name__ == "__main__":
    print(_table(context_section()))
