"""What the engine needs from its host: store, registry, hooks, features and settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.engine.hooks import HookSet
from keel.engine.plugins import Features
from keel.engine.registry import Registry
from keel.engine.slots import StepSlots, check_limit
from keel.policy.breaker import BreakerState
from keel.secret import SecretSources
from keel.store.base import Store
from keel.types import RunStatus


@dataclass
class Settings:
    """Engine settings; every one can also come from a KEEL_* variable via the App."""

    large_output_bytes: int = 256 * 1024  # larger step outputs are stored out of line
    inline_sleep_max: float = 5.0  # longer sleeps suspend the run instead of holding it
    lease_seconds: float = 30.0
    # An idle worker without a wake feed polls for claimable runs after `poll_interval`
    # seconds, doubling up to `poll_max`; any wake-up or claim starts it over. With a
    # live wake feed (Postgres LISTEN/NOTIFY, SQLite's data_version) wake-ups come from
    # the store and the claim query runs only every `listen_poll` seconds, as a safety
    # net; due timers are slept until either way (docs/architecture.md#wake-ups).
    poll_interval: float = 0.1
    poll_max: float = 2.0
    listen_poll: float = 5.0
    # Runs one worker executes at once (`keel worker --max-runs`). A worker claims only
    # up to its free run slots, so work spreads over every worker instead of the first
    # one claiming the whole queue. 16 keeps a 2-core host busy with I/O-bound runs
    # (model and tool calls mostly wait) while leaving runs for the other workers.
    max_runs: int = 16
    # Step effects (tool and model calls) one process runs at once (`--max-steps`).
    # A step holds its slot until its outcome is journaled, so this bounds how many
    # effects a kill can make run again. 256 lets a 1,000-item fan-out of I/O-bound calls
    # finish in four waves (bench W2) while a kill repeats at most 256 effects, where an
    # unbounded process was measured repeating 3,221.
    max_steps: int = 256
    tracing: bool = True  # spans for every run in the local store (and OTLP when set)
    trace_retention_days: float = 7.0  # spans older than this are purged (0: kept)
    # Ended runs older than this are purged by workers, with their journal, blobs, spans
    # and requests (0: kept forever; docs/storage.md).
    retention_days: float = 0.0
    retention_interval: float = 3600.0  # seconds between a process's retention sweeps
    trace_max_chars: int = 4096  # longer attribute values are truncated with a marker
    # Where ctx.session keeps values (KEEL_SESSION_STORE): "" is Keel's store, or a
    # redis:// URL (keel.memory.session); the engine only carries it.
    session_store: str = ""


@dataclass
class Runtime:
    store: Store
    registry: Registry
    hooks: HookSet = field(default_factory=HookSet)
    settings: Settings = field(default_factory=Settings)
    # Called when a run this process executed leaves RUNNING (App resolves waiters).
    on_settled: Callable[[str, RunStatus], None] | None = None
    # Circuit breakers, one per tool, shared by every run this process executes.
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    # Features provided by the host (the App attaches models and people): the engine
    # offers the typed doors (keel.engine.plugins), never what is behind them.
    features: Features = field(default_factory=Features)
    # Short, redacted text of a payload for error messages (the App's redactor);
    # the engine alone shows no payload content at all.
    render: Callable[[Any], str] = field(default=lambda value: _opaque(value))
    # Where `keel.Secret.reveal()` reads values inside this runtime's runs.
    secrets: SecretSources = field(default_factory=SecretSources)
    # The store's clock minus this process's, in seconds (the worker measures it every
    # heartbeat). Timers and deadlines are computed on `clock()`, so workers whose clocks
    # disagree still agree on when a run is due: one hands a timer to another unchanged.
    clock_offset: float = 0.0
    _slots: StepSlots | None = field(default=None, repr=False)

    def step_slots(self) -> StepSlots:
        """The process's step slots (`settings.max_steps`), shared by all its runs."""
        slots = self._slots
        if slots is None:
            slots = self._slots = StepSlots(self.settings.max_steps)
        elif slots.size != self.settings.max_steps:  # changed after start-up (the CLI)
            slots.size = check_limit("max_steps", self.settings.max_steps)
        return slots

    def clock(self) -> float:
        """Now on the store's clock, as well as this process can tell (epoch seconds)."""
        return time.time() + self.clock_offset


def _opaque(value: Any) -> str:
    return f"<{type(value).__name__}; no redactor configured to show it>"
