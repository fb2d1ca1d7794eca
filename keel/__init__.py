"""Keel: a durable runtime for production agentic LLM workflows.

Names resolve lazily so `import keel` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel._version import __version__

_EXPORTS = {
    "Retry": "keel.policy.retry",
    "Fallback": "keel.policy.fallback",
    "CircuitBreaker": "keel.policy.breaker",
    "RetryableError": "keel.errors",
    "ValidationFailed": "keel.errors",
    "BudgetExceeded": "keel.errors",
    "CircuitOpen": "keel.errors",
    "CheckpointFailed": "keel.errors",
    "EscalationRejected": "keel.errors",
    "Escalation": "keel.types",
    "EscalationPacket": "keel.types",
    "App": "keel.app",
    "RunHandle": "keel.handle",
    "LowConfidence": "keel.errors",
    "ApprovalRejected": "keel.errors",
    "ApprovalTimedOut": "keel.errors",
    "ReviewRejected": "keel.errors",
    "CassetteMiss": "keel.errors",
    "ModelUnavailable": "keel.errors",
    "AgentTurnLimit": "keel.errors",
    "Context": "keel.engine.context",
    "Hooks": "keel.engine.hooks",
    "StepEvent": "keel.engine.hooks",
    "current_step": "keel.engine.execution",
    "StepInfo": "keel.engine.execution",
    "All": "keel.policy.completion",
    "AtLeast": "keel.policy.completion",
    "BestEffort": "keel.policy.completion",
    "RunStatus": "keel.types",
    "RunInfo": "keel.types",
    "StepRecord": "keel.types",
    "MapResult": "keel.types",
    "ItemFailure": "keel.types",
    "StructuredError": "keel.types",
    "KeelError": "keel.errors",
    "ConfigError": "keel.errors",
    "Conflict": "keel.errors",
    "InputError": "keel.errors",
    "UnknownWorkflowError": "keel.errors",
    "RunNotFound": "keel.errors",
    "StateValidationError": "keel.errors",
    "SerializationError": "keel.errors",
    "NonDeterminismError": "keel.errors",
    "StepError": "keel.errors",
    "MapFailed": "keel.errors",
    "OutcomeUnknown": "keel.errors",
    "EffectNotApplied": "keel.errors",
    "SignalTimeout": "keel.errors",
    "SignalRefused": "keel.errors",
    "StoreError": "keel.errors",
    "PayloadUnreadable": "keel.errors",
    "RunFailed": "keel.errors",
    "RunCancelled": "keel.errors",
    "RunSuspended": "keel.errors",
    "SecretUnavailable": "keel.errors",
    "Secret": "keel.secret",
    "Redactor": "keel.observe.redact",
}

# Spelled out (not derived from _EXPORTS) so type checkers see the exports.
__all__ = [
    "AgentTurnLimit",
    "All",
    "App",
    "ApprovalRejected",
    "ApprovalTimedOut",
    "AtLeast",
    "BestEffort",
    "BudgetExceeded",
    "CassetteMiss",
    "CheckpointFailed",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "Conflict",
    "Context",
    "EffectNotApplied",
    "Escalation",
    "EscalationPacket",
    "EscalationRejected",
    "Fallback",
    "Hooks",
    "InputError",
    "ItemFailure",
    "KeelError",
    "LowConfidence",
    "MapFailed",
    "MapResult",
    "ModelUnavailable",
    "NonDeterminismError",
    "OutcomeUnknown",
    "PayloadUnreadable",
    "Redactor",
    "Retry",
    "RetryableError",
    "ReviewRejected",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "RunSuspended",
    "Secret",
    "SecretUnavailable",
    "SerializationError",
    "SignalRefused",
    "SignalTimeout",
    "StateValidationError",
    "StepError",
    "StepEvent",
    "StepInfo",
    "StepRecord",
    "StoreError",
    "StructuredError",
    "UnknownWorkflowError",
    "ValidationFailed",
    "current_step",
    "hitl",
    "llm",
]

if TYPE_CHECKING:
    from keel import hitl, llm
    from keel.app import App
    from keel.engine.context import Context
    from keel.engine.execution import StepInfo, current_step
    from keel.engine.hooks import Hooks, StepEvent
    from keel.errors import (
        AgentTurnLimit,
        ApprovalRejected,
        ApprovalTimedOut,
        BudgetExceeded,
        CassetteMiss,
        CheckpointFailed,
        CircuitOpen,
        ConfigError,
        Conflict,
        EffectNotApplied,
        EscalationRejected,
        InputError,
        KeelError,
        LowConfidence,
        MapFailed,
        ModelUnavailable,
        NonDeterminismError,
        OutcomeUnknown,
        PayloadUnreadable,
        RetryableError,
        ReviewRejected,
        RunCancelled,
        RunFailed,
        RunNotFound,
        RunSuspended,
        SecretUnavailable,
        SerializationError,
        SignalRefused,
        SignalTimeout,
        StateValidationError,
        StepError,
        StoreError,
        UnknownWorkflowError,
        ValidationFailed,
    )
    from keel.handle import RunHandle
    from keel.observe.redact import Redactor
    from keel.policy.breaker import CircuitBreaker
    from keel.policy.completion import All, AtLeast, BestEffort
    from keel.policy.fallback import Fallback
    from keel.policy.retry import Retry
    from keel.secret import Secret
    from keel.types import (
        Escalation,
        EscalationPacket,
        ItemFailure,
        MapResult,
        RunInfo,
        RunStatus,
        StepRecord,
        StructuredError,
    )


def __getattr__(name: str) -> Any:
    if name in ("llm", "hitl", "observe", "embed"):  # subpackages, imported on first use
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
