"""The per-process vector index of one (store, namespace, embedder).

The store holds every vector (the truth); an index here catches up from it by `seq`
high-water mark before each search, which costs one indexed query when nothing is new.
Every vector is also in an exact matrix, searched with one numpy product. From
`HNSW_FROM` vectors on, a usearch HNSW graph (imported lazily) answers instead: it is
built in a background thread (minutes at 100k vectors on two cores, so never on the
event loop; exact search answers meanwhile), extended there as rows arrive, and saved
to a cache file so the next process loads it instead of building it again. Rows newer
than the graph are searched exactly and merged. A forgotten or superseded row may still
be in the index: the search's row fetch drops it, and asks for more than it needs so
that k hits still come back.

Example:
    index = VectorIndex("local:all-MiniLM-L6-v2")
    await index.catch_up(store, "default")
    for seq, cosine in index.search(query_vector, 50): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from keel.store.memory import MemoryStore

log = logging.getLogger("keel.memory")

# Exact search up to this many vectors, HNSW above. Measured on the shared 2-core dev
# machine, 384-d normalised vectors, k=50: exact p50 ~10 ms at 20k and 32 ms at 100k;
# HNSW p50 1-3 ms at 20k. Below 20k the exact search is fast enough and costs no build.
HNSW_FROM = 20_000
_PAGE = 5_000  # rows read per catch-up query
_EXTEND_FROM = 512  # rows newer than the graph before the builder adds them to it
_SAVE_GROWTH = 1.1  # save the graph again once it grew by this factor
_CHECKS = 8  # rows compared when a cached graph is loaded: is it this store's?


class VectorIndex:
    """Vectors of one namespace made by one embedder, searchable by cosine.

    `cache`: where to keep the HNSW graph between processes (None: nowhere).

    Example:
        index.add([7], [vector]); index.search(query, 10)  # [(7, 0.83)]
    """

    def __init__(self, embedder: str, cache: Path | None = None) -> None:
        self.embedder = embedder
        self.cache = cache
        self.high_water = 0  # the last seq read from the store
        self.foreign: dict[str, int] = {}  # rows of other embedders seen: name -> count
        self._seqs: list[int] = []
        self._chunks: list[Any] = []  # pending float32 rows, joined on the next search
        self._matrix: Any = None  # np.ndarray (n, d)
        self._seq_array: Any = None
        self._gone: set[int] = set()
        self._lock = asyncio.Lock()
        # The graph covers the first `_graph_upto` rows of `_matrix`; the builder thread
        # publishes it (and extends it) under `_graph_lock`, searches read it under it.
        self._graph: Any = None
        self._graph_upto = 0
        self._graph_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._saved_at = 0
        self._tried_cache = False
        self.loaded = False  # the graph came from the cache file, not a build

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the builder thread, if one runs (tests, benchmarks, shutdown)."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    def __len__(self) -> int:
        return len(self._seqs) - len(self._gone)

    @property
    def graph_size(self) -> int:
        """How many rows the HNSW graph covers (0: exact search only, for now)."""
        return self._graph_upto

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
        with self._graph_lock:
            graph, upto = self._graph, self._graph_upto
            pairs: list[tuple[int, float]] = []
            if graph is not None:
                found = graph.search(query, min(want, upto))
                pairs = [
                    (int(s), 1.0 - float(d))
                    for s, d in zip(found.keys, found.distances, strict=True)
                ]
        tail = self._matrix[upto:]
        if len(tail):  # rows the graph does not cover yet: exactly
            sims = tail @ query
            top = min(want, len(sims))
            idx = np.argpartition(-sims, top - 1)[:top]
            pairs += [(int(self._seq_array[upto + i]), float(sims[i])) for i in idx]
            pairs.sort(key=lambda p: -p[1])
        self._grow()
        return [p for p in pairs if p[0] not in self._gone][:k]

    def _join(self) -> None:
        import numpy as np

        if not self._chunks:
            return
        parts = self._chunks if self._matrix is None else [self._matrix, *self._chunks]
        self._matrix = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._chunks = []
        self._seq_array = np.asarray(self._seqs, dtype=np.int64)

    # -- the graph: built, extended and saved off the event loop ---------------------

    def _grow(self) -> None:
        """Start the builder when the graph is due: first built (or loaded), or behind."""
        n = len(self._seqs)
        if n < HNSW_FROM or (self._builder is not None and self._builder.is_alive()):
            return
        if self._graph is not None and n - self._graph_upto < _EXTEND_FROM:
            return
        matrix, seqs = self._matrix, self._seq_array  # a snapshot: appends make new arrays
        self._builder = threading.Thread(
            target=self._build, args=(matrix, seqs), name="keel-vector-index", daemon=True
        )
        self._builder.start()

    def _build(self, matrix: Any, seqs: Any) -> None:
        try:
            if self._graph is None and not self._tried_cache:
                self._tried_cache = True
                self._load(matrix, seqs)
            if self._graph is None:
                self._publish(self._new_graph(matrix, seqs), len(seqs))
            else:
                self._extend(matrix, seqs)
            if self._graph_upto >= self._saved_at * _SAVE_GROWTH:
                self._save(seqs)
        except Exception:  # the exact search still answers; say why the graph did not
            log.exception("keel: building the vector index of %s failed", self.embedder)

    def _new_graph(self, matrix: Any, seqs: Any) -> Any:
        import numpy as np
        from usearch.index import Index

        graph = Index(ndim=matrix.shape[1], metric="cos", dtype="f16")
        graph.add(seqs.astype(np.uint64), matrix)
        return graph

    def _extend(self, matrix: Any, seqs: Any) -> None:
        import numpy as np

        start = self._graph_upto
        for i in range(start, len(seqs), 256):  # batches: searches wait at most one
            j = min(i + 256, len(seqs))
            with self._graph_lock:
                self._graph.add(seqs[i:j].astype(np.uint64), matrix[i:j])
                self._graph_upto = j

    def _publish(self, graph: Any, upto: int) -> None:
        with self._graph_lock:
            self._graph, self._graph_upto = graph, upto

    def _paths(self) -> tuple[Path, Path] | None:
        if self.cache is None:
            return None
        return self.cache.with_suffix(".usearch"), self.cache.with_suffix(".json")

    def _load(self, matrix: Any, seqs: Any) -> None:
        """Take a saved graph if it is this store's: its rows' vectors must match."""
        import numpy as np
        from usearch.index import Index

        paths = self._paths()
        if paths is None or not paths[0].exists():
            return
        try:
            meta = json.loads(paths[1].read_text())
            upto = int(meta["rows"])
            if meta.get("embedder") != self.embedder or upto > len(seqs):
                return
            if [int(s) for s in seqs[:upto][:: max(1, upto // _CHECKS)]] != meta["check_seqs"]:
                return
            graph = Index.restore(str(paths[0]))
            if graph is None or len(graph) != upto:
                return
            for s in meta["check_seqs"]:
                row = int(np.searchsorted(seqs, s))
                if not np.allclose(graph.get(s), matrix[row], atol=1e-2):
                    return  # another store's graph under this name: build afresh
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._publish(graph, upto)
        self._saved_at, self.loaded = upto, True
        self._extend(matrix, seqs)

    def _save(self, seqs: Any) -> None:
        paths = self._paths()
        if paths is None:
            return
        upto = self._graph_upto
        meta = {
            "embedder": self.embedder,
            "rows": upto,
            "check_seqs": [int(s) for s in seqs[:upto][:: max(1, upto // _CHECKS)]],
        }
        graph_path, meta_path = paths
        tmp = graph_path.with_suffix(f".tmp{os.getpid()}")
        try:
            graph_path.parent.mkdir(parents=True, exist_ok=True)
            with self._graph_lock:
                self._graph.save(str(tmp))
            os.replace(tmp, graph_path)  # whole files only: a crash leaves the old one
            meta_path.write_text(json.dumps(meta))
            self._saved_at = upto
        except OSError as exc:
            log.warning("keel: could not save the vector index to %s: %s", graph_path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


def cache_dir(store_url: str) -> Path | None:
    """Where the graphs of a store's namespaces are kept: `KEEL_INDEX_DIR`, else beside
    a SQLite store's file (`keel.db.vectors/`), else the user's cache directory, one
    folder per database (the URL's digest: no password in a path)."""
    import hashlib

    chosen = os.environ.get("KEEL_INDEX_DIR", "").strip()
    if chosen:
        return Path(chosen)
    if store_url.startswith("sqlite:"):
        from keel.store.sqlite import _path_from_url

        path = _path_from_url(store_url)
        return None if path == ":memory:" else Path(path + ".vectors")
    base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return base / "keel" / "vectors" / hashlib.sha256(store_url.encode()).hexdigest()[:16]


def cache_file(folder: Path | None, namespace: str, embedder: str) -> Path | None:
    """The cache file stem of one namespace's graph made by one embedder."""
    import hashlib

    if folder is None:
        return None
    return folder / hashlib.sha256(f"{namespace}\x1f{embedder}".encode()).hexdigest()[:24]
