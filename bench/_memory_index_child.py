"""One vector index measured in its own interpreter (numpy + the index's package only).

    python bench/_memory_index_child.py hnswlib|pgvector VECTORS.npy QUERIES.npy

Prints one JSON line: build seconds, per-query latencies' p50/p99 in ms, and the
top-10 ids per query (the parent computes recall against exact search). Runs in
bench/.venvs/<index>, so it imports nothing from Keel or the other bench modules.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

K = 10


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _timed_queries(search: Any, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    ids, lat = [], []
    for q in queries:
        t = time.perf_counter()
        ids.append([int(i) for i in search(q)])
        lat.append((time.perf_counter() - t) * 1000)
    return ids, lat


def hnswlib_run(vecs: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=vecs.shape[1])
    index.init_index(max_elements=len(vecs), M=16, ef_construction=128)
    index.add_items(vecs, np.arange(len(vecs)))
    build = time.perf_counter() - t
    index.set_ef(64)
    ids, lat = _timed_queries(lambda q: index.knn_query(q, k=K)[0][0], queries)
    return {"build_s": build, "ids": ids, "lat": lat, "params": "M=16 ef_construction=128 ef=64"}


def pgvector_run(vecs: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    import pgserver
    import psycopg

    def lit(v: np.ndarray) -> str:
        return "[" + ",".join(f"{x:.6f}" for x in v) + "]"

    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE TABLE m (seq int primary key, v vector({vecs.shape[1]}), "
                         "raw bytea)")
            with conn.cursor().copy("COPY m (seq, v, raw) FROM STDIN") as copy:
                for i, v in enumerate(vecs):
                    copy.write_row((i, lit(v), v.astype(np.float32).tobytes()))
            # What an in-process index over vectors kept in Postgres pays at start-up:
            t = time.perf_counter()
            rows = conn.execute("SELECT seq, raw FROM m").fetchall()
            loaded = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            load_s = time.perf_counter() - t
            assert loaded.shape == vecs.shape
            t = time.perf_counter()
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("CREATE INDEX ON m USING hnsw (v vector_cosine_ops) "
                         "WITH (m = 16, ef_construction = 64)")
            build = time.perf_counter() - t
            conn.execute("SET hnsw.ef_search = 64")
            sql = "SELECT seq FROM m ORDER BY v <=> %s::vector LIMIT 10"
            conn.execute(sql, (lit(queries[0]),)).fetchall()  # warm the plan and the cache
            ids, lat = _timed_queries(
                lambda q: [r[0] for r in conn.execute(sql, (lit(q),)).fetchall()], queries)
        server.cleanup()
    return {"build_s": build, "ids": ids, "lat": lat, "load_s": load_s,
            "params": "m=16 ef_construction=64 ef_search=64, over SQL"}


def main() -> None:
    kind, vec_path, query_path = sys.argv[1:4]
    vecs = np.load(vec_path).astype(np.float32)
    queries = np.load(query_path).astype(np.float32)
    result = {"hnswlib": hnswlib_run, "pgvector": pgvector_run}[kind](vecs, queries)
    lat = result.pop("lat")
    result.update(ok=True, p50_ms=statistics.median(lat), p99_ms=_pct(lat, 0.99))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
