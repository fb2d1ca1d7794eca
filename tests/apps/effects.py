"""Observable side effects for crash tests.

Every tool execution appends one line ``<idempotency key> <pid>`` to
``$KEEL_TEST_DIR/exec.log`` (one O_APPEND write, so lines never tear or
interleave, even across processes or a SIGKILL), and performs its *effect*
idempotently: it creates ``$KEEL_TEST_DIR/effects/<quoted idempotency key>``
with O_CREAT|O_EXCL. A second attempt at an effect that already exists is
recorded in ``effect_dupes.log`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import keel


def data_dir() -> Path:
    return Path(os.environ["KEEL_TEST_DIR"])


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _step_key() -> str:
    info = keel.current_step()
    if info is None:
        raise RuntimeError("effects must be called from inside a journaled step")
    return info.idempotency_key


def log_execution() -> str:
    """Record that this step's code is running (once per execution, re-runs included)."""
    key = _step_key()
    _append(data_dir() / "exec.log", f"{key} {os.getpid()}\n")
    return key


def apply_effect() -> bool:
    """Perform the step's effect at most once per idempotency key; True if it was new."""
    key = _step_key()
    path = data_dir() / "effects" / quote(key, safe="")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        _append(data_dir() / "effect_dupes.log", f"{key} {os.getpid()}\n")
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return True
