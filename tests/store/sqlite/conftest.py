"""Tests of the SQLite backend itself (its file, PRAGMAs, schema versions, the write
lock): they run only when the session's backend is SQLite."""

from __future__ import annotations

import pytest

from tests.backends import backend, is_sqlite


@pytest.fixture(autouse=True)
def _sqlite_only() -> None:
    if not is_sqlite():
        pytest.skip(f"SQLite-specific; this session's store backend is {backend().name}")


@pytest.fixture
def backend_name() -> str:
    """These tests are of SQLite's file: not parametrized over the other backends."""
    return "sqlite"
