"""The store backends the test suite runs on: one list, and `KEEL_TEST_STORE` picks one.

Every test takes its store URL from here (the `store_url` / `store` fixtures in
tests/conftest.py, or `fresh_url(dir)` where a test needs a second store or hands a URL
to a subprocess), so switching the variable switches the whole suite. A new backend is
one more entry in `BACKENDS`; one that needs a server starts it in `url`'s first call.

Example:
    KEEL_TEST_STORE=sqlite pytest -q tests/store
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV = "KEEL_TEST_STORE"
DEFAULT = "sqlite"


@dataclass(frozen=True, slots=True)
class Backend:
    """A store backend under test: its name and how to make a fresh, empty store's URL."""

    name: str
    # A URL no other test uses, its files (if any) under the given directory.
    url: Callable[[Path, str], str]


def _sqlite_url(directory: Path, name: str) -> str:
    # tmp_path is absolute, so this is sqlite:////tmp/...: the form open_store documents
    return f"sqlite:///{directory}/{name}.db"


BACKENDS: dict[str, Backend] = {b.name: b for b in (Backend("sqlite", _sqlite_url),)}


class UnknownBackend(Exception):
    """KEEL_TEST_STORE names no registered backend."""


def backend() -> Backend:
    """The backend this test session runs on (`KEEL_TEST_STORE`, default sqlite)."""
    name = os.environ.get(ENV, "").strip() or DEFAULT
    found = BACKENDS.get(name)
    if found is None:
        raise UnknownBackend(
            f"{ENV}={name!r} is not a store backend the tests know; use one of:"
            f" {', '.join(sorted(BACKENDS))} (tests/backends.py lists them)"
        )
    return found


def fresh_url(directory: Path, name: str = "keel") -> str:
    """A fresh store URL on this session's backend, e.g. `fresh_url(tmp_path, "other")`."""
    return backend().url(Path(directory), name)


def is_sqlite() -> bool:
    """Whether this session runs on SQLite (tests of the file itself skip otherwise)."""
    return backend().name == "sqlite"
