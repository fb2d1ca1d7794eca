"""Partial-completion policies for `ctx.map` and `ctx.gather`."""

from __future__ import annotations

import math
from dataclasses import dataclass


class CompletionPolicy:
    """Decides whether a fan-out with some failed items counts as done."""

    def required(self, total: int) -> int:
        raise NotImplementedError

    def describe(self, total: int) -> str:
        return f"at least {self.required(total)} of {total} items"


@dataclass(frozen=True)
class All(CompletionPolicy):
    """Every item must succeed (the default).

    Example: `await ctx.map(fn, items, require=keel.All())`
    """

    def required(self, total: int) -> int:
        return total

    def describe(self, total: int) -> str:
        return f"all {total} items"


@dataclass(frozen=True)
class AtLeast(CompletionPolicy):
    """At least `n` items (an int) or a fraction of them (a float in (0, 1]).

    Example: `await ctx.map(fn, items, require=keel.AtLeast(0.9))`
    """

    n: int | float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | float):
            raise TypeError(f"AtLeast takes a count or a fraction, not {self.n!r}")
        if isinstance(self.n, float) and not 0 < self.n <= 1:
            raise ValueError(f"AtLeast fraction must be in (0, 1], got {self.n}")
        if isinstance(self.n, int) and self.n < 0:
            raise ValueError(f"AtLeast count must be >= 0, got {self.n}")

    def required(self, total: int) -> int:
        if isinstance(self.n, float):
            return math.ceil(self.n * total - 1e-9)
        return self.n


@dataclass(frozen=True)
class BestEffort(CompletionPolicy):
    """Never raise; the caller inspects `.failed`.

    Example: `res = await ctx.map(fn, items, require=keel.BestEffort())`
    """

    def required(self, total: int) -> int:
        return 0

    def describe(self, total: int) -> str:
        return "best effort"
