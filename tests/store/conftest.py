"""The conformance suite's fixtures: every test runs once per selected backend.

`store` (tests/conftest.py) opens `store_url`, which here is parametrized by backend, so
test ids carry it (`test_x[sqlite]`). The backends come from tests/backends.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import BACKENDS, backend


@pytest.fixture(params=[backend().name])
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test (KEEL_TEST_STORE's)."""
    return str(request.param)


@pytest.fixture
def store_url(tmp_path: Path, backend_name: str) -> str:
    """A fresh store URL on the backend under test."""
    return BACKENDS[backend_name].url(tmp_path, "keel")
