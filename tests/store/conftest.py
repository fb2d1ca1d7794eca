"""The conformance suite's fixtures: every test runs once per selected backend.

`store` (tests/conftest.py) opens `store_url`, which here is parametrized by every
backend, so test ids carry it (`test_x[sqlite]`, `test_x[postgres]`). The backends come
from tests/backends.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import BACKENDS, backend

# Every backend the suite knows, KEEL_TEST_STORE's first: the conformance suite runs on
# all of them in every session (a backend whose server is missing skips with the install
# hint, and fails under CI=true).
_UNDER_TEST = [backend().name, *(n for n in BACKENDS if n != backend().name)]


@pytest.fixture(params=_UNDER_TEST)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def store_url(tmp_path: Path, backend_name: str) -> str:
    """A fresh store URL on the backend under test."""
    return BACKENDS[backend_name].url(tmp_path, "keel")
