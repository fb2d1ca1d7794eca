"""Tiered memory: working memory (the context window of each model call) and more.

Example:
    from keel.memory import Block, Window
    fit = Window(4000).assemble([Block("task", "Triage this ticket", kind="task")])
"""

from keel.memory.window import Assembly, Block, Decision, Window

__all__ = ["Assembly", "Block", "Decision", "Window"]
