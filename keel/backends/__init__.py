"""Executors other than Keel's own engine that run the same workflows (see docs/temporal.md).

Importing this package is cheap: no executor is imported until one is named.
"""

from __future__ import annotations

import os
from typing import Any


def resolve(given: Any) -> Any:
    """Where an App's runs execute: `given` (a keel.backends.temporal.Backend or its
    temporal:// URL), else `KEEL_BACKEND`; None is Keel's own engine.

    Example:
        backend = resolve("temporal://localhost:7233/default?task_queue=keel")
    """
    if given is None and not os.environ.get("KEEL_BACKEND", "").strip():
        return None
    from keel.backends.temporal.config import resolve as temporal

    return temporal(given)


__all__ = ["resolve"]
