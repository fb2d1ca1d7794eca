"""The per-process vector index of one (store, namespace, embedder).

The store holds every vector (the truth); an index here catches up from it by `seq`
high-water mark before each search, which costs one indexed query when nothing is new.
Small namespaces are searched exactly (one numpy matrix product); above `HNSW_FROM`
vectors an approximate usearch HNSW graph (imported lazily) takes over. A forgotten or
superseded row may still be in the index: the search's row fetch drops it, and asks
for more than it needs so that k hits still come back.

Example:
    index = VectorIndex("local:all-MiniLM-L6-v2")
    await index.catch_up(store, "default")
    for seq, cosine in index.search(query_vector, 50): ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from keel.store.memory import MemoryStore

# Exact search up to this many vectors, HNSW above. Measured on the shared 2-core dev
# machine, 384-d normalised vectors, k=50, numpy as configured here: exact p50 12 ms at
# 5k and 20k, 32 ms at 100k; HNSW p50 0.5 ms at 5k, 1.0 ms at 20k, but building the graph
# took 3.5 s for 5k and 52 s for 20k (once per process, on the first search). Below
# 20k the exact search is fast enough and costs no build; above, the graph pays off.
# The retrieval bench (bench/memory.py) is where to refine this.
HNSW_FROM = 20_000
_PAGE = 5_000  # rows read per catch-up query


class VectorIndex:
    """Vectors of one namespace made by one embedder, searchable by cosine.

    Example:
        index.add([7], [vector]); index.search(query, 10)  # [(7, 0.83)]
    """

    def __init__(self, embedder: str) -> None:
        self.embedder = embedder
        self.high_water = 0  # the last seq read from the store
        self.foreign: dict[str, int] = {}  # rows of other embedders seen: name -> count
        self._seqs: list[int] = []
        self._chunks: list[Any] = []  # pending float32 rows, joined on the next search
        self._matrix: Any = None  # np.ndarray (n, d)
        self._seq_array: Any = None
        self._gone: set[int] = set()
        self._hnsw: Any = None
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._seqs) - len(self._gone)

    async def catch_up(self, store: MemoryStore, namespace: str) -> None:
        """Read the rows added since the last call (one query when there are none)."""
        async with self._lock:
            while True:
                page = await store.memory_vectors(namespace, self.high_water, _PAGE)
                mine = [(s, v) for s, e, v in page if e == self.embedder and v is not None]
                for _, e, _ in page:
                    if e != self.embedder:
                        self.foreign[e] = self.foreign.get(e, 0) + 1
                if mine:
                    self.add([s for s, _ in mine], [v for _, v in mine])
                if page:
                    self.high_water = page[-1][0]
                if len(page) < _PAGE:
                    return

    def add(self, seqs: list[int], vectors: Iterable[bytes]) -> None:
        """Add rows (float32 bytes) in seq order."""
        import numpy as np

        block = np.stack([np.frombuffer(v, dtype=np.float32) for v in vectors])
        if self._matrix is not None and block.shape[1] != self._matrix.shape[1]:
            raise ConfigError(
                f"vectors of embedder {self.embedder!r} changed size ({self._matrix.shape[1]}"
                f" then {block.shape[1]}): give a changed model another embedder name"
            )
        self._seqs.extend(seqs)
        self._chunks.append(block)
        if self._hnsw is not None:
            self._hnsw.add(np.asarray(seqs, dtype=np.uint64), block)

    def discard(self, seqs: Iterable[int]) -> None:
        """Forget rows the store no longer has (they are skipped from now on)."""
        self._gone.update(seqs)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to `k` (seq, cosine) pairs, the closest first (vectors are normalised)."""
        import numpy as np

        self._join()
        if self._matrix is None or k < 1:
            return []
        want = k + len(self._gone)
        if self._hnsw is not None:
            found = self._hnsw.search(query, min(want, len(self._seqs)))
            pairs = [
                (int(s), 1.0 - float(d)) for s, d in zip(found.keys, found.distances, strict=True)
            ]
        else:
            sims = self._matrix @ query
            top = min(want, len(sims))
            idx = np.argpartition(-sims, top - 1)[:top]
            idx = idx[np.argsort(-sims[idx])]
            pairs = [(int(self._seq_array[i]), float(sims[i])) for i in idx]
        return [p for p in pairs if p[0] not in self._gone][:k]

    def _join(self) -> None:
        import numpy as np

        if not self._chunks:
            return
        parts = self._chunks if self._matrix is None else [self._matrix, *self._chunks]
        self._matrix = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._chunks = []
        self._seq_array = np.asarray(self._seqs, dtype=np.int64)
        if self._hnsw is None and len(self._seqs) >= HNSW_FROM:
            self._build_hnsw()

    def _build_hnsw(self) -> None:
        import numpy as np
        from usearch.index import Index

        hnsw = Index(ndim=self._matrix.shape[1], metric="cos", dtype="f32")
        hnsw.add(self._seq_array.astype(np.uint64), self._matrix)
        self._hnsw = hnsw
