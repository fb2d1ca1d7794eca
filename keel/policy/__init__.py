"""Policies the engine applies: plain objects, no I/O."""

from keel.policy.breaker import CircuitBreaker
from keel.policy.completion import All, AtLeast, BestEffort, CompletionPolicy
from keel.policy.fallback import Fallback
from keel.policy.retry import Retry

__all__ = [
    "All",
    "AtLeast",
    "BestEffort",
    "CircuitBreaker",
    "CompletionPolicy",
    "Fallback",
    "Retry",
]
