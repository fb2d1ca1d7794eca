"""`ctx.memory`: long-term memory inside a workflow, every call one journaled operation.

- `search` journals its hits (ids, text, scores, metadata, content digests): a replayed
  or resumed run gets exactly the first attempt's hits, whatever was added or forgotten
  since.
- `add`, `add_many` and `supersede` derive their ids from the run id and the
  operation's key, and the store inserts idempotently by id: a write re-executed after
  a crash (done, but not yet journaled) writes nothing new. Exactly once.
- `forget` records its intent before it deletes (an irreversible step), so a
  re-execution that finds the memory gone knows it was this run's own delete; on both
  executors (on Temporal the intent is in Keel's store, keel.backends.temporal.intent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from keel.engine.recovery import PLAIN, StepPolicy
from keel.errors import ConfigError, InputError, MemoryNotFound
from keel.memory import _checks
from keel.memory.hit import MemoryHit
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.operation import Operation
    from keel.memory.api import Memory
    from keel.memory.extract import Starter


class JournaledMemory:
    """What `ctx.memory` is: `Memory`'s API, each call a journaled step.

    Example:
        @app.workflow
        async def answer(ctx: keel.Context, user: str, question: str) -> list[str]:
            hits = await ctx.memory.search(question, namespace=user, min_relevance=0.5)
            await ctx.memory.add(f"asked: {question}", namespace=user)
            return [h.text for h in hits]
    """

    def __init__(self, ctx: Context, memory: Memory, extractions: Starter | None = None) -> None:
        self._ctx = ctx
        self._memory = memory
        self._extractions = extractions

    def _op(self, name: str, *inputs: Any) -> Operation:
        return self._ctx.operation(f"memory.{name}", *inputs, kind=StepKind.MEMORY)

    async def search(
        self,
        query: str,
        *,
        namespace: str = "default",
        k: int = 5,
        min_relevance: float | None = None,
        filter: dict[str, Any] | None = None,
        as_of: Any = None,
    ) -> list[MemoryHit]:
        """`Memory.search`, journaled: replay returns the recorded hits."""
        _checks.text(query, "search query")  # bad input raises here, journaling nothing
        _checks.namespace(namespace), _checks.k(k), _checks.min_relevance(min_relevance)
        _checks.search_filter(filter)
        when = _checks.as_of(as_of)
        op = self._op("search", query, namespace, k, min_relevance, filter, when)
        mem = self._memory

        async def live() -> list[dict[str, Any]]:
            hits = await mem.search(
                query,
                namespace=namespace,
                k=k,
                min_relevance=min_relevance,
                filter=filter,
                as_of=when,
            )
            return [h.as_dict() for h in hits]

        asked = {"query": query, "namespace": namespace, "k": k, "min_relevance": min_relevance}
        found = await op.run(live, list[dict[str, Any]], _shown(asked))
        return [MemoryHit.from_dict(d) for d in found]

    async def add(
        self, text: str, *, namespace: str = "default", metadata: dict[str, Any] | None = None
    ) -> str:
        """`Memory.add`, once: its id is derived from the run and this step."""
        item = {"text": text} if metadata is None else {"text": text, "metadata": metadata}
        (mid,) = await self._add("add", [item], namespace)
        return mid

    async def add_many(
        self, items: Sequence[str | dict[str, Any]], *, namespace: str = "default"
    ) -> list[str]:
        """`Memory.add_many`, once."""
        return await self._add("add_many", items, namespace)

    async def _add(
        self, name: str, items: Sequence[str | dict[str, Any]], namespace: str
    ) -> list[str]:
        _checks.namespace(namespace)
        _checks.items(items)  # bad input raises here, journaling nothing
        op = self._op(name, list(items), namespace)
        ids = [_derived(op, i) for i in range(len(items))]
        mem, source = self._memory, f"run:{op.run_id}"

        async def live() -> list[str]:
            return await mem._write(items, namespace, ids, source)

        out: list[str] = await op.run(live, list[str], _shown({"namespace": namespace}))
        return out

    async def supersede(
        self, memory_id: str, text: str, *, metadata: dict[str, Any] | None = None
    ) -> str:
        """`Memory.supersede`, once: the new fact's id is derived from the run and step."""
        _checks.text(text), _checks.metadata(metadata)
        op = self._op("supersede", memory_id, text, metadata)
        new_id, mem, source = _derived(op, 0), self._memory, f"run:{op.run_id}"

        async def live() -> str:
            return await mem._supersede(memory_id, text, metadata, new_id, source)

        out: str = await op.run(live, str, _shown({"supersedes": memory_id}))
        return out

    async def forget(self, memory_id: str) -> None:
        """`Memory.forget`, once (a re-execution after its delete is not an error).

        An irreversible effect: its intent is journaled before the delete, so an
        execution that finds the intent without an outcome (its worker died between
        them) deletes again, and a memory already gone is this run's own delete."""
        op = self._op("forget", memory_id)
        mem = self._memory

        async def delete() -> str:
            await mem.forget(memory_id)
            return memory_id  # what its span shows it deleted

        async def resume(idempotency_key: str) -> str:
            try:
                await mem.forget(memory_id)
            except MemoryNotFound:
                pass  # the interrupted execution deleted it
            return memory_id

        once = replace(PLAIN, irreversible=True, reconcile=resume)
        await op.run(delete, str, once)

    async def extract(
        self,
        source: str,
        *,
        namespace: str = "default",
        instructions: str = "",
        max_cost_usd: float | None = None,
    ) -> str:
        """Start extracting the facts `source` states into `namespace`, in a run of its
        own (`keel.memory.extract`), and return that run's id at once: this run never
        waits for it. Started once, whatever crashes (its id is derived from this step).
        Each item's status: `app.memory.extracts(id)` (keel.memory.extract)."""
        _checks.text(source, "extraction source"), _checks.namespace(namespace)
        if max_cost_usd is not None and not (
            isinstance(max_cost_usd, int | float) and max_cost_usd > 0
        ):
            raise InputError(f"max_cost_usd is a positive amount in USD, not {max_cost_usd!r}")
        if self._extractions is None:
            raise ConfigError("this app cannot start memory extractions")
        op = self._op("extract", source, namespace, instructions, max_cost_usd)
        # One extraction per step of this run, the same id in every execution.
        tag = hashlib.sha256(f"{op.run_id}/{op.key}".encode()).hexdigest()[:10]
        start, run_id = self._extractions, f"{op.run_id[:180]}~memory-{tag}"
        payload = {
            "source": source,
            "namespace": namespace,
            "source_run": op.run_id,
            "instructions": instructions,
            "max_cost_usd": max_cost_usd,
        }
        session = self._ctx.session_id  # the extraction belongs to the same session
        shown = _shown({"namespace": namespace})
        out: str = await op.run(lambda: start(run_id, payload, session), str, shown)
        return out


def _shown(asked: dict[str, Any]) -> StepPolicy:
    """A plain step that journals `asked` as its input: what its trace span shows."""
    return PLAIN.with_input(asked)


def _derived(op: Operation, i: int) -> str:
    """The id of the `i`th memory an operation writes: the same in every execution."""
    key = f"{op.run_id}/{op.key}/{i}".encode()
    return f"mem_{hashlib.sha256(key).hexdigest()[:32]}"
