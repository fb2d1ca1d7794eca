"""Tiered memory: working memory (what each model call's context window holds, within a
token budget: `Window`, `Block`), session state outside it (`ctx.session`,
`keel.memory.session`), and long-term memory (`app.memory`, `ctx.memory` inside
workflows, journaled): facts with validity intervals, searched by hybrid retrieval with
a calibrated relevance.

Example:
    mid = await app.memory.add("Ada prefers green tea", namespace="user:ada")
    hits = await app.memory.search("Ada's drink?", namespace="user:ada", min_relevance=0.5)
    fit = Window(4000).assemble([Block("task", "Triage this ticket", kind="task")])
"""

from __future__ import annotations

from keel.memory.api import Memory
from keel.memory.hit import MemoryHit
from keel.memory.window import Assembly, Block, Decision, Window

__all__ = ["Assembly", "Block", "Decision", "Memory", "MemoryHit", "Window"]
