"""`MemoryStore`: long-term memory rows (facts with validity intervals and vectors), their
full-text index, and the statuses of items extracted from runs.

The store holds the truth, vectors included; `keel.memory` keeps a per-process vector
index that catches up from here by `seq`. Text, context and metadata are stored in
clear: a searchable index cannot be sealed (docs/encryption.md).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from keel.store.records import KeywordHit, MemoryExtract, MemoryNamespace, MemoryRow


class MemoryStore(abc.ABC):
    """Memory rows, keyword candidates, index catch-up, forget and supersede.

    Example:
        await store.memory_insert([row])
        hits = await store.memory_keyword("default", ["tea"], as_of=None, limit=50)
        rows = await store.memory_rows(seqs=[h.seq for h in hits])
    """

    @abc.abstractmethod
    async def memory_insert(self, rows: Sequence[MemoryRow]) -> list[str]:
        """Insert `rows`, idempotent by id: a row whose id is stored already is left as it
        is (a re-executed add writes nothing new). Returns the ids newly written."""

    @abc.abstractmethod
    async def memory_rows(
        self, *, ids: Sequence[str] = (), seqs: Sequence[int] = (), vectors: bool = True
    ) -> list[MemoryRow]:
        """The stored rows with these ids or seqs (missing ones are left out; a forgotten
        memory is missing), in `seq` order; `vectors=False` leaves `vector` None."""

    @abc.abstractmethod
    async def memory_keyword(
        self, namespace: str, terms: Sequence[str], as_of: float | None, limit: int
    ) -> list[KeywordHit]:
        """Full-text candidates in `namespace` matching any of `terms` (stemmed; any text
        is safe), best first, at most `limit`. `as_of` None: facts valid now; else facts
        valid at that time (epoch seconds)."""

    @abc.abstractmethod
    async def memory_vectors(
        self, namespace: str, after_seq: int, limit: int
    ) -> list[tuple[int, str, bytes | None]]:
        """`(seq, embedder, vector)` of rows in `namespace` with seq > `after_seq`, in seq
        order, at most `limit` (an index catching up; closed facts included)."""

    @abc.abstractmethod
    async def memory_list(
        self, namespace: str, *, after_seq: int = 0, limit: int = 100, current: bool = True
    ) -> list[MemoryRow]:
        """Rows of `namespace` after `after_seq` in seq order, without vectors; `current`:
        only facts not superseded."""

    @abc.abstractmethod
    async def memory_namespaces(self, *, limit: int = 1000) -> list[MemoryNamespace]:
        """The namespaces holding memories, in name order, at most `limit`, each with its
        count of current and superseded facts and when it last grew."""

    @abc.abstractmethod
    async def memory_forget(self, memory_id: str, *, by: str | None = None) -> bool:
        """Delete the memory for good (its text leaves the full-text index too); False if
        no memory has that id. `by` (a person) audits the delete as `memory_forgotten`
        in the same transaction."""

    @abc.abstractmethod
    async def memory_supersede(self, old_id: str, new: MemoryRow) -> MemoryRow:
        """In one transaction: close `old_id` (`valid_to` = `new.valid_from`,
        `superseded_by` = `new.id`) and insert `new`; returns the closed row. Idempotent:
        done again with the same `new.id`, it changes nothing. Raises `MemoryNotFound` for
        an unknown id, `Conflict` when the fact was superseded by another one already."""

    @abc.abstractmethod
    async def memory_extract_put(self, items: Sequence[MemoryExtract]) -> None:
        """Record (or update) the status of extracted items, keyed by (run_id, item)."""

    @abc.abstractmethod
    async def memory_extracts(self, run_id: str) -> list[MemoryExtract]:
        """The extracted items of a run and what became of each, in item order."""
