"""Tiered memory. Long-term memory: facts with validity intervals, searched by hybrid
retrieval with a calibrated relevance (`app.memory`, and `ctx.memory` inside workflows,
journaled). Session state outside the context window: `ctx.session`
(`keel.memory.session`).

Example:
    mid = await app.memory.add("Ada prefers green tea", namespace="user:ada")
    hits = await app.memory.search("Ada's drink?", namespace="user:ada", min_relevance=0.5)
"""

from __future__ import annotations

from keel.memory.api import Memory
from keel.memory.hit import MemoryHit

__all__ = ["Memory", "MemoryHit"]
