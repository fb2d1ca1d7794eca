"""Keel: a durable runtime for production agentic LLM workflows.

Names resolve lazily so `import keel` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel._version import __version__

# THE list of Keel's public names: name -> the module defining it, resolved on first
# use. `__all__` and `__dir__` derive from it; the TYPE_CHECKING imports below mirror it
# for type checkers, and tests/test_public_api.py pins both (a new public name is a
# reviewed change: add it here, to the mirror, and to the test's list).
_EXPORTS = {
    "AgentTurnLimit": "keel.errors",
    "ContextOverflow": "keel.errors",
    "ApprovalRejected": "keel.errors",
    "ApprovalTimedOut": "keel.errors",
    "BudgetExceeded": "keel.errors",
    "CassetteMiss": "keel.errors",
    "CheckpointFailed": "keel.errors",
    "CircuitOpen": "keel.errors",
    "ConfigError": "keel.errors",
    "Conflict": "keel.errors",
    "EffectNotApplied": "keel.errors",
    "EscalationRejected": "keel.errors",
    "InputError": "keel.errors",
    "KeelError": "keel.errors",
    "LowConfidence": "keel.errors",
    "MapFailed": "keel.errors",
    "MemoryNotFound": "keel.errors",
    "ModelUnavailable": "keel.errors",
    "NonDeterminismError": "keel.errors",
    "OutcomeUnknown": "keel.errors",
    "PayloadUnreadable": "keel.errors",
    "RetryableError": "keel.errors",
    "ReviewRejected": "keel.errors",
    "RunCancelled": "keel.errors",
    "RunFailed": "keel.errors",
    "RunNotFound": "keel.errors",
    "RunSuspended": "keel.errors",
    "SecretUnavailable": "keel.errors",
    "SerializationError": "keel.errors",
    "SignalRefused": "keel.errors",
    "SignalTimeout": "keel.errors",
    "StateValidationError": "keel.errors",
    "StepError": "keel.errors",
    "StoreError": "keel.errors",
    "UnknownWorkflowError": "keel.errors",
    "ValidationFailed": "keel.errors",
    "Escalation": "keel.types",
    "EscalationPacket": "keel.types",
    "ItemFailure": "keel.types",
    "MapResult": "keel.types",
    "RunInfo": "keel.types",
    "RunStatus": "keel.types",
    "StepRecord": "keel.types",
    "StructuredError": "keel.types",
    "Retry": "keel.policy.retry",
    "Fallback": "keel.policy.fallback",
    "CircuitBreaker": "keel.policy.breaker",
    "All": "keel.policy.completion",
    "AtLeast": "keel.policy.completion",
    "BestEffort": "keel.policy.completion",
    "Secret": "keel.secret",
    "Context": "keel.engine.context",
    "current_step": "keel.engine.execution",
    "StepInfo": "keel.engine.execution",
    "Hooks": "keel.engine.hooks",
    "StepEvent": "keel.engine.hooks",
    "App": "keel.app",
    "RunHandle": "keel.handle",
    "Redactor": "keel.observe.redact",
}
# Public subpackages, imported on first attribute access (`keel.llm.Gateway`).
_SUBPACKAGES = ("drift", "evals", "hitl", "llm", "memory")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES])

if TYPE_CHECKING:
    # `X as X` marks an explicit re-export, which mypy --strict needs as __all__ is not a
    # literal; isort would split these into one statement per name.
    # isort: off
    from keel import drift as drift, evals as evals, hitl as hitl, llm as llm, memory as memory
    from keel.app import App as App
    from keel.engine.context import Context as Context
    from keel.engine.execution import (
        StepInfo as StepInfo,
        current_step as current_step,
    )
    from keel.engine.hooks import (
        Hooks as Hooks,
        StepEvent as StepEvent,
    )
    from keel.errors import (
        AgentTurnLimit as AgentTurnLimit,
        ApprovalRejected as ApprovalRejected,
        ApprovalTimedOut as ApprovalTimedOut,
        BudgetExceeded as BudgetExceeded,
        ContextOverflow as ContextOverflow,
        CassetteMiss as CassetteMiss,
        CheckpointFailed as CheckpointFailed,
        CircuitOpen as CircuitOpen,
        ConfigError as ConfigError,
        Conflict as Conflict,
        EffectNotApplied as EffectNotApplied,
        EscalationRejected as EscalationRejected,
        InputError as InputError,
        KeelError as KeelError,
        LowConfidence as LowConfidence,
        MapFailed as MapFailed,
        MemoryNotFound as MemoryNotFound,
        ModelUnavailable as ModelUnavailable,
        NonDeterminismError as NonDeterminismError,
        OutcomeUnknown as OutcomeUnknown,
        PayloadUnreadable as PayloadUnreadable,
        RetryableError as RetryableError,
        ReviewRejected as ReviewRejected,
        RunCancelled as RunCancelled,
        RunFailed as RunFailed,
        RunNotFound as RunNotFound,
        RunSuspended as RunSuspended,
        SecretUnavailable as SecretUnavailable,
        SerializationError as SerializationError,
        SignalRefused as SignalRefused,
        SignalTimeout as SignalTimeout,
        StateValidationError as StateValidationError,
        StepError as StepError,
        StoreError as StoreError,
        UnknownWorkflowError as UnknownWorkflowError,
        ValidationFailed as ValidationFailed,
    )
    from keel.handle import RunHandle as RunHandle
    from keel.observe.redact import Redactor as Redactor
    from keel.policy.breaker import CircuitBreaker as CircuitBreaker
    from keel.policy.completion import (
        All as All,
        AtLeast as AtLeast,
        BestEffort as BestEffort,
    )
    from keel.policy.fallback import Fallback as Fallback
    from keel.policy.retry import Retry as Retry
    from keel.secret import Secret as Secret
    from keel.types import (
        Escalation as Escalation,
        EscalationPacket as EscalationPacket,
        ItemFailure as ItemFailure,
        MapResult as MapResult,
        RunInfo as RunInfo,
        RunStatus as RunStatus,
        StepRecord as StepRecord,
        StructuredError as StructuredError,
    )
    # isort: on


def __getattr__(name: str) -> Any:
    if name in (*_SUBPACKAGES, "observe", "embed"):  # subpackages, imported on first use
        import importlib

        return importlib.import_module(f"keel.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
