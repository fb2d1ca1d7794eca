"""Policies the engine applies: plain objects, no I/O."""

from keel.policy.completion import All, AtLeast, BestEffort, CompletionPolicy

__all__ = ["All", "AtLeast", "BestEffort", "CompletionPolicy"]
