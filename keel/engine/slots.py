"""Step slots: how many step effects one process runs at once (`max_steps`).

A step takes a slot before its effect starts and gives it back once the effect's
outcome is journaled. So a process never holds more effects that are done but not
yet journaled than it has slots: that is how many steps a kill can make run again.

Only effects hold slots. A parent waiting on its map children, a run waiting for a
timer, a signal or a person, a step waiting out a retry's backoff: none holds one,
so no step waiting for a slot can be waiting on a step that holds one (no deadlock).
An effect that itself makes steps (a tool calling `ctx.call`) runs them on its own
slot, for the same reason (keel.engine.recovery: `CURRENT_STEP` is set inside an effect).
"""

from __future__ import annotations

import asyncio
from collections import deque

from keel.errors import ConfigError


def check_limit(option: str, value: object) -> int:
    """`value` as a limit of at least 1, or a ConfigError naming `option`.

    Example:
        check_limit("max_steps (KEEL_MAX_STEPS)", "8")   # 8
    """
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        value, ok = int(value), True
    if not ok or value < 1:  # type: ignore[operator]
        raise ConfigError(f"{option} must be a whole number >= 1, got {value!r}")
    return value  # type: ignore[return-value]


class StepSlots:
    """A counting gate for step effects, fair (first come, first served).

    Example:
        slots = StepSlots(4)
        held = slots.take_now() or await slots.take()
        try:
            ...  # the effect, then the journal write of its outcome
        finally:
            held.give_back()
    """

    def __init__(self, size: int) -> None:
        self.size = check_limit("max_steps", size)
        self.busy = 0  # slots held now
        self.peak = 0  # most slots ever held at once (tests, diagnostics)
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gen = 0  # bumped with each new loop: slots of an old loop are not given back

    def take_now(self) -> Held | None:
        """A free slot without waiting (every step's path while slots are free), or None."""
        free = self.busy < self.size and not self._waiting
        if free and asyncio.get_running_loop() is self._loop:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
            return Held(self)
        return None

    async def take(self) -> Held:
        """Wait for a free slot and hold it."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a new asyncio.run): start afresh
            self._loop, self.busy, self._waiting = loop, 0, deque()
            self._gen += 1
        if self.busy < self.size and not self._waiting:
            self.busy += 1
        else:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting.append(fut)
            try:
                await fut  # the releaser hands its slot over: busy is unchanged
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._give_back(self._gen)  # handed over as we were cancelled: pass it on
                elif fut in self._waiting:  # not yet skipped by a `_give_back`
                    self._waiting.remove(fut)
                raise
        self.peak = max(self.peak, self.busy)
        return Held(self)

    def _give_back(self, gen: int) -> None:
        if gen != self._gen:
            return
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.busy -= 1


class Held:
    """One slot taken from `StepSlots`; `give_back()` is idempotent."""

    __slots__ = ("_gen", "_slots")

    def __init__(self, slots: StepSlots) -> None:
        self._slots: StepSlots | None = slots
        self._gen = slots._gen

    def give_back(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._give_back(self._gen)
