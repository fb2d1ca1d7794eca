"""Observability: OpenTelemetry traces in the Keel store (and OTLP), metrics, logs, redaction."""

from keel.observe.logs import JsonFormatter, TraceContextFilter, configure_logging
from keel.observe.redact import Redactor
from keel.observe.spans import SEMCONV_VERSION

__all__ = [
    "SEMCONV_VERSION",
    "JsonFormatter",
    "Redactor",
    "TraceContextFilter",
    "configure_logging",
]
