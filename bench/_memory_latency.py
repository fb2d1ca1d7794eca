"""Search latency through `app.memory.search` at 10k and 100k memories in one namespace.

The memories are generated conversation turns (the bench generator, more personas)
with their date and speaker as context, written with `add_many`. Their vectors come
from `_memory_indexes.synth` (mixes of real MiniLM vectors: embedding 100k texts
takes ~35 min here) through an Embedder that serves precomputed vectors, which is
also how the query's embedding is taken out of the retrieval time: the query
embedding (real MiniLM, one query per call, as in a live search) is timed on its own.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _memory_embed import embed
from _memory_indexes import base_vectors, synth
from memory_data import build
from memory_data.generate import _Overlap, _persona

NAME = "local:all-MiniLM-L6-v2"
QUERIES = 200


class _Precomputed:
    """An Embedder serving vectors it was given (by exact text); MiniLM's name."""

    name = NAME

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t].tolist() for t in texts]


def _texts(n: int) -> list[tuple[str, str]]:
    """`n` (text, context) pairs from generated personas (their own seed: not dev/test)."""
    from random import Random

    out: list[tuple[str, str]] = []
    overlap, i = _Overlap(), 0
    while len(out) < n:
        turns, _ = _persona(Random(99_000 + i), "bulk", i, overlap)
        out += [(t.text, f"{t.date} {t.speaker}") for t in turns]
        i += 1
    return out[:n]


def _pcts(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return s[len(s) // 2], s[min(len(s) - 1, int(0.99 * len(s)))]


async def _measure(n: int, questions: list[str], qvecs: np.ndarray) -> dict[str, Any]:
    import keel

    pairs = _texts(n)
    vecs = synth(n, base_vectors(), seed=n)
    table = {f"{c}\n{t}": v for (t, c), v in zip(pairs, vecs, strict=True)}
    table.update(zip(questions, qvecs, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        app = keel.App(f"sqlite:///{Path(tmp) / 'memory.db'}", embedder=_Precomputed(table))
        try:
            t = time.perf_counter()
            items = [{"text": t_, "context": c} for t_, c in pairs]
            for i in range(0, n, 2000):
                await app.memory.add_many(items[i:i + 2000], namespace="bench")
            add_s = time.perf_counter() - t
            t = time.perf_counter()
            await app.memory.search(questions[0], namespace="bench", k=5)
            first_s = time.perf_counter() - t  # reads every vector (exact search meanwhile)
            # Above HNSW_FROM the graph is built in a background thread: time it, and
            # measure the steady state (graph ready), which is what a live process sees.
            index = app.memory._indexes["bench"]
            t = time.perf_counter()
            await asyncio.to_thread(index.settle)
            graph_s = time.perf_counter() - t
            await app.memory.search(questions[0], namespace="bench", k=5)
            lat = []
            for q in questions:
                t = time.perf_counter()
                await app.memory.search(q, namespace="bench", k=5)
                lat.append((time.perf_counter() - t) * 1000)
        finally:
            await app.close()
    p50, p99 = _pcts(lat)
    return {"n": n, "add_per_s": n / add_s, "first_search_s": first_s, "graph_build_s": graph_s,
            "graph_size": index.graph_size,
            "retrieval_p50_ms": p50, "retrieval_p99_ms": p99, "load": os.getloadavg()}


def run(sizes: list[int]) -> dict[str, Any]:
    """Query embedding p50/p99 (real MiniLM), then retrieval p50/p99 per size."""
    from keel.embed import LocalMiniLM

    data = build("test", quick=True)
    questions = list(dict.fromkeys(q.text for q in data.questions))[:QUERIES]
    qvecs = embed("minilm", questions)
    model = LocalMiniLM()
    model.embed_sync(["warm up"])
    lat = []
    for q in questions[:100]:
        t = time.perf_counter()
        model.embed_sync([q])
        lat.append((time.perf_counter() - t) * 1000)
    p50, p99 = _pcts(lat)
    rows = [asyncio.run(_measure(n, questions, qvecs)) for n in sizes]
    return {"query_embed_p50_ms": p50, "query_embed_p99_ms": p99, "sizes": rows}
