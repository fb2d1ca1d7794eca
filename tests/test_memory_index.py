"""The vector index: exact search answers at once; from HNSW_FROM rows a graph is built
in a background thread, extended as rows arrive, saved, and loaded by the next process
only when it is this store's (its rows' vectors match)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keel.memory import index as vindex
from keel.memory.index import VectorIndex, cache_dir, cache_file
from tests.limits import WAIT

N = 600


def _rows(n: int, seed: int, start: int = 1) -> tuple[list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, 32)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return list(range(start, start + n)), m


def _index(path: Path | None, seqs: list[int], m: np.ndarray) -> VectorIndex:
    idx = VectorIndex("test-embedder", path)
    idx.add(seqs, [v.tobytes() for v in m])
    return idx


@pytest.fixture(autouse=True)
def small_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vindex, "HNSW_FROM", 200)
    monkeypatch.setattr(vindex, "_EXTEND_FROM", 50)


def test_exact_answers_first_then_the_graph_is_built_saved_and_extended(tmp_path: Path) -> None:
    seqs, m = _rows(N, seed=1)
    idx = _index(tmp_path / "g", seqs, m)
    first = idx.search(m[17], 3)  # starts the builder; exact search answers meanwhile
    assert first[0] == (18, pytest.approx(1.0, abs=1e-5))
    idx.settle(WAIT)
    assert idx.graph_size == N and not idx.loaded
    assert (tmp_path / "g.usearch").exists() and (tmp_path / "g.json").exists()
    assert idx.search(m[400], 1)[0][0] == 401  # through the graph now

    more_seqs, more = _rows(100, seed=2, start=N + 1)
    idx.add(more_seqs, [v.tobytes() for v in more])
    assert idx.search(more[5], 1)[0][0] == N + 6  # newer than the graph: exact, merged
    idx.settle(WAIT)
    assert idx.graph_size == N + 100  # the builder extended it


def test_the_next_process_loads_the_saved_graph(tmp_path: Path) -> None:
    seqs, m = _rows(N, seed=3)
    built = _index(tmp_path / "g", seqs, m)
    built.search(m[0], 1)
    built.settle(WAIT)
    again = _index(tmp_path / "g", seqs, m)
    again.search(m[0], 1)
    again.settle(WAIT)
    assert again.loaded and again.graph_size == N
    assert again.search(m[250], 1)[0][0] == 251


def test_a_graph_saved_for_other_vectors_is_not_used(tmp_path: Path) -> None:
    seqs, m = _rows(N, seed=4)
    built = _index(tmp_path / "g", seqs, m)
    built.search(m[0], 1)
    built.settle(WAIT)
    _, other = _rows(N, seed=5)  # same seqs, other vectors: another store, same file name
    fresh = _index(tmp_path / "g", seqs, other)
    fresh.search(other[0], 1)
    fresh.settle(WAIT)
    assert not fresh.loaded and fresh.graph_size == N
    assert fresh.search(other[123], 1)[0][0] == 124


def test_forgotten_rows_never_come_back() -> None:
    seqs, m = _rows(N, seed=6)
    idx = _index(None, seqs, m)
    idx.discard([11])
    idx.search(m[10], 5)
    idx.settle(WAIT)
    assert 11 not in [s for s, _ in idx.search(m[10], 5)]


def test_where_graphs_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KEEL_INDEX_DIR", raising=False)
    assert cache_dir("sqlite:///.keel/keel.db") == Path(".keel/keel.db.vectors")
    pg = cache_dir("postgresql://keel:secret@db/keel")
    assert pg is not None and "secret" not in str(pg)
    monkeypatch.setenv("KEEL_INDEX_DIR", str(tmp_path))
    assert cache_dir("sqlite:///x.db") == tmp_path
    a, b = cache_file(tmp_path, "ns", "e1"), cache_file(tmp_path, "ns", "e2")
    assert a != b and a is not None and a.parent == tmp_path
