"""Memory off the hot path: facts extracted from a run into long-term memory by a run of
its own (`ctx.memory.extract(...)`), so the run that produced them never waits for it.

The extraction is a workflow (`keel.memory.extract`, registered on every App) started
once per `extract` call: its id is derived from the calling run and step, and starting
an existing id is idempotent, so a crash around the start never starts two. It cuts the
source into chunks, asks the model for the facts each states (one journaled model call
per chunk, metered under its own workflow and run: `keel costs --workflow
keel.memory.extract`, and `Budgets(per_workflow_day={"keel.memory.extract": ...})` caps
it), stops when its own `max_cost_usd` is spent, and writes each item's status to the
store as it goes:

    extracted  the model stated it; not written yet
    added      written to long-term memory (`memory_id`)
    duplicate  the namespace already holds it, word for word (`memory_id`: that one)
    invalid    empty or too long to be a fact
    skipped    not reached: the extraction's budget was spent

so "what made it in" is `app.memory.extracts(extraction_id)` or `keel memory extracts ID`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from keel.store.records import MemoryExtract
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.store.memory import MemoryStore
    from keel.store.usage import UsageStore

WORKFLOW = "keel.memory.extract"
# A chunk per model call: long sources are read in pieces the model can hold, and the
# budget is checked between them.
CHUNK_CHARS = 6000
MAX_FACT_CHARS = 1000
PROMPT = """Extract the durable facts stated in the text below: preferences, decisions,
identities, commitments and circumstances worth remembering in later conversations. One
short, self-contained sentence per fact, naming who it is about. Leave out greetings,
questions and anything only true for this moment.
{instructions}
<transcript>
{chunk}
</transcript>"""


class Facts(BaseModel):
    """What the model returns for one chunk."""

    facts: list[str] = Field(default_factory=list)


# (extraction run id, its input, the asking run's session) -> the extraction run's id
Starter = Callable[[str, dict[str, Any], str | None], Awaitable[str]]


def extraction_workflow(
    store_of: Callable[[], MemoryStore | UsageStore],
) -> Callable[..., Awaitable[dict[str, int]]]:
    """The extraction workflow's body over the store `store_of()` returns (keel/features.py
    registers it on every App as `WORKFLOW`)."""

    async def extract_memories(
        ctx: Context,
        source: str,
        namespace: str,
        source_run: str,
        instructions: str = "",
        max_cost_usd: float | None = None,
    ) -> dict[str, int]:
        """Extract facts from `source` into `namespace`; counts per status."""
        store: Any = store_of()
        chunks = _chunks(source)
        statuses: dict[str, int] = {}
        item = 0
        for n, chunk in enumerate(chunks):
            if max_cost_usd is not None:
                spent = await ctx.operation("spent", n, kind=StepKind.VALUE).run(
                    lambda: store.spent(run_id=ctx.run_id), float
                )
                if spent >= max_cost_usd:  # the chunks left are not read: each one item
                    left = [(i, c[:200]) for i, c in enumerate(chunks[n:], item)]
                    why = f"the extraction's budget (${max_cost_usd}) was spent"
                    await _put(ctx, store, namespace, left, "skipped", why)
                    statuses["skipped"] = len(left)
                    break
            prompt = PROMPT.format(chunk=chunk, instructions=instructions)
            found: Facts = await ctx.llm.structured(Facts, prompt, name="extract")
            for fact in found.facts:
                status = await _one(ctx, store, item, namespace, fact.strip(), source_run)
                statuses[status] = statuses.get(status, 0) + 1
                item += 1
        return statuses

    return extract_memories


async def _one(
    ctx: Context, store: Any, item: int, namespace: str, fact: str, source_run: str
) -> str:
    if not fact or len(fact) > MAX_FACT_CHARS:
        why = "empty" if not fact else f"longer than {MAX_FACT_CHARS} characters"
        await _put(ctx, store, namespace, [(item, fact[:MAX_FACT_CHARS])], "invalid", why)
        return "invalid"
    await _put(ctx, store, namespace, [(item, fact)], "extracted")
    near = await ctx.memory.search(fact, namespace=namespace, k=3)
    same = [h for h in near if _normal(h.text) == _normal(fact)]
    if same:
        hit = same[0]
        await _put(ctx, store, namespace, [(item, fact)], "duplicate", f"repeats {hit.id}", hit.id)
        return "duplicate"
    mid = await ctx.memory.add(fact, namespace=namespace, metadata={"source_run": source_run})
    await _put(ctx, store, namespace, [(item, fact)], "added", None, mid)
    return "added"


async def _put(
    ctx: Context,
    store: Any,
    namespace: str,
    items: list[tuple[int, str]],
    status: str,
    reason: str | None = None,
    memory_id: str | None = None,
) -> None:
    """Record `status` for `items` ((index, text) pairs) as one journaled step: a replayed
    extraction does not write it again, and the write is an upsert by (run, item), so a
    re-executed one changes nothing."""
    run_id = ctx.run_id
    op = ctx.operation("memory.status", items[0][0], status, kind=StepKind.MEMORY)

    async def write() -> None:
        now = time.time()
        await store.memory_extract_put(
            [
                MemoryExtract(run_id, i, namespace, text, status, reason, memory_id, now)
                for i, text in items
            ]
        )

    await op.run(write)


def _normal(text: str) -> str:
    # A fact stated again with other spacing, case or final punctuation is the same fact.
    # Only the same words count: relevance says "about the same thing", and two facts
    # about the same thing (an old address, a new one) are both worth keeping.
    return " ".join(text.lower().split()).rstrip(".!")


def _chunks(source: str) -> list[str]:
    """`source` in pieces of at most CHUNK_CHARS, cut at line ends where there are any."""
    out: list[str] = []
    rest = source.strip()
    while len(rest) > CHUNK_CHARS:
        cut = rest.rfind("\n", 0, CHUNK_CHARS)
        cut = cut if cut > CHUNK_CHARS // 2 else CHUNK_CHARS
        out.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest:
        out.append(rest)
    return out


__all__ = ["WORKFLOW", "Facts", "Starter", "extraction_workflow"]
