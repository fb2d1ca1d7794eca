"""Observability: OpenTelemetry traces in the Keel store (and OTLP), metrics, logs, redaction."""

from keel.observe.logs import JsonFormatter, RedactingFilter, TraceContextFilter, configure_logging
from keel.observe.redact import MASK, Redactor
from keel.observe.spans import SEMCONV_VERSION

__all__ = [
    "MASK",
    "SEMCONV_VERSION",
    "JsonFormatter",
    "RedactingFilter",
    "Redactor",
    "TraceContextFilter",
    "configure_logging",
]
