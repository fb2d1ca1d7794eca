"""Index choice by measurement: recall@10 against exact search, build time, p50/p99.

At 10k and 100k 384-d vectors: exact numpy, usearch HNSW (in process), hnswlib (its
own venv, built from the sdist), and pgvector HNSW inside Postgres 16 from the PyPI
package `pgserver` (its own venv), next to what an in-process index over vectors kept
in Postgres pays instead (reading every vector out at start-up).

The vectors: embedding 100k texts takes ~35 min on this 2-core machine under load,
so the sets are synthesised from the real MiniLM vectors of the bench corpora (each a
normalised mix of two real vectors plus a little noise), and the queries are real
MiniLM question vectors. Index cost and recall depend on the distribution, which this
keeps close to real text; the retrieval-quality section uses real vectors only.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _memory_embed import CACHE

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"
CHILD_TIMEOUT_S = 1200.0  # pgvector's HNSW build at 100k takes minutes on 2 busy cores
PINS = {"hnswlib": ["numpy==2.4.6", "hnswlib==0.8.0"],
        "pgserver": ["numpy==2.4.6", "pgserver==0.1.4", "psycopg[binary]==3.3.9"]}


def base_vectors() -> np.ndarray:
    db = sqlite3.connect(CACHE / "embeddings.sqlite")
    rows = db.execute("SELECT vec FROM v WHERE model = 'minilm' ORDER BY digest").fetchall()
    db.close()
    if len(rows) < 500:
        raise RuntimeError("run the quality section first: it fills the MiniLM cache")
    return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows])


def synth(n: int, base: np.ndarray, seed: int = 16) -> np.ndarray:
    """`n` unit vectors, each a mix of two real ones plus noise (deterministic)."""
    rng = np.random.default_rng(seed)
    a = base[rng.integers(0, len(base), n)]
    b = base[rng.integers(0, len(base), n)]
    noise = rng.standard_normal((n, base.shape[1])).astype(np.float32) / np.sqrt(base.shape[1])
    v = a + 0.5 * b + 0.3 * noise
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(vecs: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    s = vecs @ q
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def _pcts(lat: list[float]) -> tuple[float, float]:
    xs = sorted(lat)
    return xs[len(xs) // 2], xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def _recall(ids: list[list[int]], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(set(a) & set(map(int, t))) / len(t)
                          for a, t in zip(ids, truth, strict=True)]))


def _venv(name: str) -> Path | None:
    """bench/.venvs/<name> with its pins installed (made on first use); None if it can't be."""
    python = VENVS / name / "bin" / "python"
    stamp = VENVS / name / ".pins"
    want = " ".join(PINS[name])
    if not (python.exists() and stamp.exists() and stamp.read_text() == want):
        VENVS.mkdir(exist_ok=True)
        for cmd in ([sys.executable, "-m", "venv", str(VENVS / name)],
                    [str(python), "-m", "pip", "install", "-q", *PINS[name]]):
            if subprocess.run(cmd, capture_output=True, text=True).returncode:
                return None
        stamp.write_text(want)
    return python


def _child(name: str, kind: str, vec_path: Path, q_path: Path) -> dict[str, Any]:
    python = _venv(name)
    if python is None:
        return {"ok": False, "error": f"could not install {' '.join(PINS[name])} "
                                      f"into bench/.venvs/{name}"}
    proc = subprocess.Popen([str(python), str(BENCH / "_memory_index_child.py"), kind,
                             str(vec_path), str(q_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ok": False, "error": f"timeout after {CHILD_TIMEOUT_S:.0f} s"}
    try:
        return dict(json.loads(out.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        tail = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"ok": False, "error": tail[:200]}


def measure(
    sizes: list[int], queries: np.ndarray, *, children: bool = True
) -> list[dict[str, Any]]:
    """One row per (index, size)."""
    from usearch.index import Index

    base = base_vectors()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        vecs = synth(n, base)
        truth = [exact_topk(vecs, q) for q in queries]
        lat = []
        for q in queries:
            t = time.perf_counter()
            exact_topk(vecs, q)
            lat.append((time.perf_counter() - t) * 1000)
        p50, p99 = _pcts(lat)
        rows.append({"index": "exact numpy", "n": n, "recall@10": 1.0, "build_s": 0.0,
                     "p50_ms": p50, "p99_ms": p99, "params": "float32 matmul + argpartition"})
        t = time.perf_counter()
        index = Index(ndim=vecs.shape[1], metric="cos", dtype="f32", connectivity=16,
                      expansion_add=128, expansion_search=64)
        index.add(np.arange(n), vecs)
        build = time.perf_counter() - t
        ids, lat = [], []
        for q in queries:
            t = time.perf_counter()
            found = index.search(q, 10)
            lat.append((time.perf_counter() - t) * 1000)
            ids.append([int(k) for k in found.keys])
        p50, p99 = _pcts(lat)
        rows.append({"index": "usearch HNSW", "n": n, "recall@10": _recall(ids, truth),
                     "build_s": build, "p50_ms": p50, "p99_ms": p99,
                     "params": "connectivity=16 expansion_add=128 expansion_search=64"})
        if not children:
            continue
        vec_path, q_path = CACHE / f"index-{n}.npy", CACHE / "index-queries.npy"
        np.save(vec_path, vecs)
        np.save(q_path, queries)
        for name, kind, label in (("hnswlib", "hnswlib", "hnswlib HNSW"),
                                  ("pgserver", "pgvector", "pgvector HNSW (SQL)")):
            res = _child(name, kind, vec_path, q_path)
            row: dict[str, Any] = {"index": label, "n": n}
            if res.get("ok"):
                row.update({k: res[k] for k in ("build_s", "p50_ms", "p99_ms", "params")})
                row["recall@10"] = _recall(res["ids"], truth)
                if "load_s" in res:
                    mine = next(r for r in rows if r["index"] == "usearch HNSW" and r["n"] == n)
                    rows.append({"index": "in-process usearch over Postgres vectors", "n": n,
                                 "load_s": res["load_s"], "p50_ms": mine["p50_ms"],
                                 "p99_ms": mine["p99_ms"], "recall@10": mine["recall@10"],
                                 "params": "read every vector out at start-up, then usearch"})
            else:
                row["error"] = res.get("error", "failed")
            rows.append(row)
    return rows
