"""OpenTelemetry metrics: runs by status, step latency, retries, fallbacks, tokens and cost.

Instruments come from the global MeterProvider (or the `meter` passed in): a no-op
unless the application installs one. The raw material for drift monitoring.
"""

from __future__ import annotations

from typing import Any

from keel.engine.hooks import Hooks, StepEvent
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus, StructuredError


class Metrics:
    def __init__(self, meter: Any = None) -> None:
        if meter is None:
            from opentelemetry import metrics

            meter = metrics.get_meter("keel")
        self.runs = meter.create_counter("keel.runs", description="Runs ended, by status")
        self.step_duration = meter.create_histogram(
            "keel.step.duration", unit="s", description="Step latency, by kind and name"
        )
        self.retries = meter.create_counter(
            "keel.step.retries", description="Retried attempts, by tool"
        )
        self.fallbacks = meter.create_counter(
            "keel.step.fallbacks", description="Fallbacks taken, by tool and kind"
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens per model call, by model and token type",
        )
        self.cost = meter.create_counter(
            "keel.cost.usd", unit="USD", description="Model cost, by model"
        )
        self.escalations = meter.create_up_down_counter(
            "keel.escalations.open", description="Escalations waiting for a person, by queue"
        )
        self.approvals = meter.create_up_down_counter(
            "keel.approvals.pending",
            description="Approvals and reviews waiting for a person, by kind",
        )

    def run_ended(self, workflow: str, status: str) -> None:
        self.runs.add(1, {"gen_ai.workflow.name": workflow, "keel.run.status": status})

    def step_recorded(self, workflow: str, rec: StepRecord) -> None:
        attrs = {"keel.step.kind": rec.kind.value, "keel.step.name": rec.name}
        if rec.ended_at is not None:
            self.step_duration.record(rec.ended_at - rec.started_at, attrs)
        if rec.attempts > 1:
            self.retries.add(rec.attempts - 1, attrs)
        if rec.fallback:
            self.fallbacks.add(1, {**attrs, "keel.fallback": rec.fallback})
        if (
            rec.kind is StepKind.LLM
            and rec.status is StepStatus.OK
            and isinstance(rec.output, dict)
        ):
            out = rec.output
            provider, _, short = str(out.get("model", "")).partition("/")
            model = short or provider  # as on the model call's span
            usage = out.get("usage") or {}
            base = {
                "gen_ai.request.model": model,
                "gen_ai.provider.name": provider if short else "unknown",
                "gen_ai.operation.name": "chat",
            }
            self.tokens.record(
                int(usage.get("input_tokens") or 0), {**base, "gen_ai.token.type": "input"}
            )
            self.tokens.record(
                int(usage.get("output_tokens") or 0), {**base, "gen_ai.token.type": "output"}
            )
            self.cost.add(float(out.get("cost_usd") or 0.0), {"gen_ai.request.model": model})

    def escalated(self, queue: str, delta: int) -> None:
        self.escalations.add(delta, {"keel.queue": queue})


class MetricsHook(Hooks):
    """Feeds the instruments from engine events (only steps that ran, runs that ended)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def step_recorded(self, ev: StepEvent) -> None:
        rec = ev.record
        if rec is None or rec.kind is StepKind.VALUE:
            return
        if rec.kind is StepKind.REVIEW:  # a request opened (pending) or decided (final)
            delta = 1 if rec.status is StepStatus.PENDING else -1
            self.metrics.approvals.add(delta, {"keel.review.kind": rec.key.split(":", 1)[0]})
        if rec.status is not StepStatus.PENDING:
            self.metrics.step_recorded(ev.workflow, rec)

    def execution_ended(
        self, run: RunInfo, status: RunStatus | None, error: StructuredError | None
    ) -> None:
        if status is not None and status.terminal:
            self.metrics.run_ended(run.workflow, status.value)

    def escalated(self, run_id: str, escalation_id: str, queue: str) -> None:
        self.metrics.escalated(queue, 1)


def sdk_meter_provider_installed() -> bool:
    """True when the application installed a real MeterProvider (not the default no-op)."""
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    return type(provider).__module__.startswith("opentelemetry.sdk")
