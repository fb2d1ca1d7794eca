"""`Memory`: long-term memory of an App (`app.memory`): add, search, forget, supersede.

Facts are append-only with validity intervals: `supersede` closes the old fact (it
stays findable `as_of` a time it held) and adds the new one; `forget` deletes for good.
Search is hybrid: full-text candidates and nearest vectors, ranked with a calibrated
relevance (`keel.memory.retrieval`), so `min_relevance` keeps only what matters.
"""

from __future__ import annotations

import builtins
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from keel.embed import Embedder, name_of
from keel.errors import ConfigError, MemoryNotFound
from keel.memory import _checks, retrieval
from keel.memory.hit import MemoryHit
from keel.memory.index import VectorIndex, cache_dir, cache_file
from keel.store.records import MemoryExtract, MemoryNamespace, MemoryRow

if TYPE_CHECKING:
    import numpy as np

    from keel.store.memory import MemoryStore

_BATCH = 64  # texts per embedding call


def digest(text: str) -> str:
    """The content digest of a memory's text (what journals record of a hit)."""
    return hashlib.sha256(text.encode()).hexdigest()


class Memory:
    """Long-term memory over a store, with an embedder (the local MiniLM by default).

    Example:
        mid = await app.memory.add("Ada prefers green tea", namespace="user:ada")
        hits = await app.memory.search("what does Ada drink?", namespace="user:ada",
                                       min_relevance=0.5)
    """

    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from keel.embed import default

        self.store = store
        self.embedder: Embedder = embedder if embedder is not None else default()
        self.embedder_name = name_of(self.embedder)
        self._calibration = retrieval.calibration_of(self.embedder)
        self._clock = clock
        self._indexes: dict[str, VectorIndex] = {}
        self._cache = cache_dir(getattr(store, "url", ""))  # HNSW graphs between processes

    # -- writes ---------------------------------------------------------------------

    async def add(
        self, text: str, *, namespace: str = "default", metadata: dict[str, Any] | None = None
    ) -> str:
        """Remember `text` in `namespace`; returns its id."""
        item = {"text": text} if metadata is None else {"text": text, "metadata": metadata}
        (mid,) = await self.add_many([item], namespace=namespace)
        return mid

    async def add_many(
        self, items: Sequence[str | dict[str, Any]], *, namespace: str = "default"
    ) -> list[str]:
        """Remember several facts at once (one embedding batch, one transaction); their
        ids in order. An item is a string or `{"text", "metadata"?, "context"?}`: the
        context (e.g. the previous turn, the speaker, the date) is indexed and embedded
        with the text but not returned by search."""
        ids = [f"mem_{uuid.uuid4().hex}" for _ in items]
        return await self._write(items, namespace, ids, source=None)

    async def _write(
        self,
        items: Sequence[str | dict[str, Any]],
        namespace: str,
        ids: Sequence[str],
        source: str | None,
    ) -> list[str]:
        """Check, embed and insert `items` under the given ids (a row whose id is
        stored already is left as it is: writes with derived ids happen once)."""
        rows = await self._rows(items, namespace, ids, source)
        await self.store.memory_insert(rows)
        return list(ids)

    async def _rows(
        self,
        items: Sequence[str | dict[str, Any]],
        namespace: str,
        ids: Sequence[str],
        source: str | None,
    ) -> list[MemoryRow]:
        ns = _checks.namespace(namespace)
        parsed = _checks.items(items)
        vectors = await self._embed([_embedded(t, c) for t, _, c in parsed])
        now = self._clock()
        return [
            MemoryRow(
                id=mid,
                namespace=ns,
                text=t,
                context=c,
                metadata=m,
                digest=digest(t),
                embedder=self.embedder_name,
                vector=v.tobytes(),
                valid_from=now,
                source=source,
                created_at=now,
            )
            for mid, (t, m, c), v in zip(ids, parsed, vectors, strict=True)
        ]

    async def forget(self, memory_id: str, *, by: str | None = None) -> None:
        """Delete a memory for good (privacy): gone from search, listing and the
        full-text index. `by`: the person asking, audited (`memory_forgotten`, with the
        namespace, never the text). Raises `keel.MemoryNotFound` for an unknown id."""
        if not await self.store.memory_forget(memory_id, by=by):
            raise _not_found(memory_id, "forget")

    async def supersede(
        self, memory_id: str, text: str, *, metadata: dict[str, Any] | None = None
    ) -> str:
        """Replace a fact: the old one stays, valid until now (findable with `as_of`),
        the new one is valid from now. Returns the new id."""
        return await self._supersede(memory_id, text, metadata, f"mem_{uuid.uuid4().hex}", None)

    async def _supersede(
        self,
        memory_id: str,
        text: str,
        metadata: dict[str, Any] | None,
        new_id: str,
        source: str | None,
    ) -> str:
        found = await self.store.memory_rows(ids=[memory_id], vectors=False)
        if not found:
            raise _not_found(memory_id, "supersede")
        old = found[0]
        item = {"text": text, "metadata": metadata}
        (row,) = await self._rows([item], old.namespace, [new_id], source)
        await self.store.memory_supersede(memory_id, row)
        return new_id

    # -- reads ----------------------------------------------------------------------

    async def get(self, memory_id: str) -> MemoryRow:
        """The stored memory (for tools and the CLI). Raises `keel.MemoryNotFound`."""
        found = await self.store.memory_rows(ids=[memory_id], vectors=False)
        if not found:
            raise _not_found(memory_id, "get")
        return found[0]

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
        """The `k` memories most relevant to `query`, best first, each scored in [0, 1];
        only those scoring at least `min_relevance` (so possibly none). `filter` keeps
        memories whose metadata has exactly those values; `as_of` (datetime or epoch
        seconds) searches the facts valid then instead of now."""
        _checks.text(query, "search query")
        ns, k = _checks.namespace(namespace), _checks.k(k)
        floor = _checks.min_relevance(min_relevance)
        wanted = _checks.search_filter(filter)
        when = _checks.as_of(as_of)
        (qv,) = await self._embed([query])
        index = await self._index(ns)
        pool = retrieval.POOL * (4 if wanted else 1)
        keyword = await self.store.memory_keyword(ns, retrieval.terms(query), when, pool)
        nearest = index.search(qv, pool + (pool if when is not None else 0))
        seqs = [h.seq for h in keyword] + [s for s, _ in nearest]
        rows = {r.seq: r for r in await self.store.memory_rows(seqs=seqs)}
        index.discard(s for s, _ in nearest if s not in rows)
        usable = {
            s: r
            for s, r in rows.items()
            if _valid(r, when) and _matches(r, wanted) and r.embedder == self.embedder_name
        }
        cands = _candidates(usable, keyword, nearest, qv)
        hits = []
        for ranked in retrieval.rank(cands, self._calibration):
            if floor is not None and ranked.relevance < floor:
                break  # ranked by relevance: nothing after it passes either
            r = usable[ranked.seq]
            hits.append(MemoryHit(r.id, r.text, ranked.relevance, r.metadata or {}, r.digest))
            if len(hits) == k:
                break
        return hits

    async def _index(self, namespace: str) -> VectorIndex:
        index = self._indexes.get(namespace)
        if index is None:
            where = cache_file(self._cache, namespace, self.embedder_name)
            index = self._indexes[namespace] = VectorIndex(self.embedder_name, where)
        await index.catch_up(self.store, namespace)
        if index.foreign:
            others = ", ".join(f"{n!r} ({c} memories)" for n, c in sorted(index.foreign.items()))
            raise ConfigError(
                f"namespace {namespace!r} holds memories embedded by {others}, but this app"
                f" embeds with {self.embedder_name!r}: their vectors cannot be compared."
                " Configure the same embedder (keel.App(embedder=...) or KEEL_EMBEDDER), or"
                " keep each embedder's memories in a namespace of its own",
                namespace=namespace,
                embedder=self.embedder_name,
            )
        return index

    async def _embed(self, texts: list[str]) -> list[np.ndarray]:
        import numpy as np

        out: list[np.ndarray] = []
        for i in range(0, len(texts), _BATCH):
            vectors = await self.embedder.embed(texts[i : i + _BATCH])
            for v in vectors:
                arr = np.asarray(v, dtype=np.float32)
                norm = float(np.linalg.norm(arr))
                out.append(arr / norm if norm > 0 else arr)
        return out

    async def list(
        self, *, namespace: str = "default", limit: int = 100, after: int = 0, current: bool = True
    ) -> builtins.list[MemoryRow]:
        """A page of the namespace's memories in the order added (`after`: the last
        row's `seq` of the previous page); `current=False` includes superseded facts."""
        ns = _checks.namespace(namespace)
        return await self.store.memory_list(ns, after_seq=after, limit=limit, current=current)

    async def namespaces(self, *, limit: int = 1000) -> builtins.list[MemoryNamespace]:
        """The namespaces holding memories, in name order, with their counts."""
        return await self.store.memory_namespaces(limit=limit)

    async def extracts(self, extraction_id: str) -> builtins.list[MemoryExtract]:
        """What became of each item an extraction run found (`ctx.memory.extract`
        returns its id): extracted, added, duplicate, invalid or skipped, and why."""
        return await self.store.memory_extracts(extraction_id)


def _embedded(text: str, context: str | None) -> str:
    # The context goes first: it frames the text (who said it, when, after what).
    return text if not context else f"{context}\n{text}"


def _valid(row: MemoryRow, when: float | None) -> bool:
    if when is None:
        return row.valid_to is None
    return row.valid_from <= when and (row.valid_to is None or row.valid_to > when)


def _matches(row: MemoryRow, wanted: dict[str, Any] | None) -> bool:
    if not wanted:
        return True
    meta = row.metadata or {}
    return all(k in meta and meta[k] == v for k, v in wanted.items())


def _candidates(
    usable: dict[int, MemoryRow],
    keyword: Sequence[Any],
    nearest: Sequence[tuple[int, float]],
    qv: np.ndarray,
) -> list[retrieval.Candidate]:
    import numpy as np

    kw_rank: dict[int, tuple[int, float]] = {}
    for h in keyword:
        if h.seq in usable:
            kw_rank.setdefault(h.seq, (len(kw_rank), h.score))
    vec_rank: dict[int, int] = {}
    for s, _ in nearest:
        if s in usable:
            vec_rank.setdefault(s, len(vec_rank))
    out = []
    for s in dict.fromkeys([*kw_rank, *vec_rank]):
        vec = usable[s].vector
        cos = float(np.frombuffer(vec, dtype=np.float32) @ qv) if vec else 0.0
        kr = kw_rank.get(s)
        out.append(
            retrieval.Candidate(
                seq=s,
                cosine=cos,
                keyword_rank=None if kr is None else kr[0],
                keyword_score=None if kr is None else kr[1],
                vector_rank=vec_rank.get(s),
            )
        )
    return out


_PAST = {"get": "read", "forget": "forgotten", "supersede": "superseded"}


def _not_found(memory_id: str, verb: str) -> MemoryNotFound:
    return MemoryNotFound(
        f"no memory has id {memory_id!r} (never added, or forgotten), so it cannot be"
        f" {_PAST[verb]}; search or list the namespace for the current ids",
        memory_id=memory_id,
    )
