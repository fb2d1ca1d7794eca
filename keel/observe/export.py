"""OTLP export when the standard OTEL_EXPORTER_OTLP_* variables are set (HTTP or gRPC).

Message content (prompts, responses, tool arguments and results) is exported only
when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, as the GenAI
conventions ask; the local trace store keeps it unless a workflow turns it off.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from keel.observe.spans import SCHEMA_URL, SpanRow


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


def capture_content() -> bool:
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() in ("1", "true", "yes")


class OTLPExport:
    """Sends finished spans to an OTLP endpoint with the SDK's exporters."""

    def __init__(self, exporter: Any, protocol: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from keel._version import __version__

        self.exporter = exporter
        self.protocol = protocol
        self.resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", "keel")}
        )
        self.scope = InstrumentationScope("keel", __version__, SCHEMA_URL)
        self.content = capture_content()

    @classmethod
    def from_env(cls) -> OTLPExport | None:
        """None unless an OTLP traces endpoint is configured."""
        if _env("OTEL_TRACES_EXPORTER") == "none":
            return None
        endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint is None:
            return None
        protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol = protocol or "http/protobuf"
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            return cls(GrpcExporter(), protocol)
        if protocol != "http/protobuf":
            from keel.errors import ConfigError

            raise ConfigError(
                f"OTLP protocol {protocol!r} is not supported; use grpc or http/protobuf"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return cls(HttpExporter(), protocol)

    async def send(self, spans: list[SpanRow]) -> bool:
        """True when the endpoint accepted the spans."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        readable = [s.to_otel(self.resource, self.scope, self.content) for s in spans]
        result = await asyncio.to_thread(self.exporter.export, readable)
        return bool(result is SpanExportResult.SUCCESS)

    async def flush(self) -> None:
        await asyncio.to_thread(self.exporter.force_flush)

    def shutdown(self) -> None:
        self.exporter.shutdown()
