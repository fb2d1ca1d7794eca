"""A real OTLP trace receiver for the export tests: HTTP (POST /v1/traces, protobuf) or gRPC.

Both decode each request with opentelemetry-proto's `ExportTraceServiceRequest`
(what a collector does) and keep the raw bytes too, so a test can assert on the
spans that arrived and search the wire payload for anything that must not leak.

    with http_receiver() as rx:          # or grpc_receiver()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        ...
        spans = rx.wait_for(lambda spans: len(spans) >= 5)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.limits import WAIT

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class ReceivedSpan:
    """One span as it arrived, decoded: ids in hex, attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[str]
    resource: dict[str, Any]
    scope: str
    schema_url: str
    start_ns: int
    end_ns: int


@dataclass
class Receiver:
    protocol: str
    endpoint: str = ""
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def accept(self, body: bytes, path: str = "") -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with self._cond:
            self.raw.append(body)
            self.requests.append(req)
            self.paths.append(path)
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received, in arrival order."""
        return [sp for batch in self.batches() for sp in batch]

    def batches(self) -> list[list[ReceivedSpan]]:
        """The spans of each request, in arrival order (one export call, one request)."""
        with self._cond:
            requests = list(self.requests)
        return [self._decode(req) for req in requests]

    @staticmethod
    def _decode(req: ExportTraceServiceRequest) -> list[ReceivedSpan]:
        out = []
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append(
                        ReceivedSpan(
                            name=sp.name,
                            trace_id=sp.trace_id.hex(),
                            span_id=sp.span_id.hex(),
                            parent_id=sp.parent_span_id.hex() or None,
                            kind=KINDS.get(sp.kind, str(sp.kind)),
                            status=STATUS.get(sp.status.code, str(sp.status.code)),
                            status_message=sp.status.message,
                            attributes=attrs(sp.attributes),
                            events=[
                                {"name": e.name, "attributes": attrs(e.attributes)}
                                for e in sp.events
                            ],
                            links=[ln.span_id.hex() for ln in sp.links],
                            resource=resource,
                            scope=ss.scope.name,
                            schema_url=ss.schema_url or rs.schema_url,
                            start_ns=sp.start_time_unix_nano,
                            end_ns=sp.end_time_unix_nano,
                        )
                    )
        return out

    def payload(self) -> bytes:
        """Every request body received, concatenated (for searching the wire format)."""
        with self._cond:
            return b"".join(self.raw)

    def wait_for(
        self, pred: Callable[[list[ReceivedSpan]], bool], timeout: float = WAIT
    ) -> list[ReceivedSpan]:
        """The spans received once `pred(spans)` holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if pred(spans):
                return spans
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"OTLP {self.protocol} receiver: condition not met within {timeout}s; "
                    f"got {len(spans)} span(s): {sorted(s.name for s in spans)}"
                )
            with self._cond:
                self._cond.wait(min(left, 0.1))


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    """OTLP/HTTP on a free loopback port: POST /v1/traces with a protobuf body."""
    rx = Receiver("http/protobuf")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = _decompress(self.rfile.read(length), self.headers.get("Content-Encoding"))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(415)
                self.end_headers()
                return
            rx.accept(body, self.path)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="otlp-http", daemon=True)
    thread.start()
    rx.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rx
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT)


@contextmanager
def grpc_receiver() -> Iterator[Receiver]:
    """OTLP/gRPC on a free loopback port: opentelemetry.proto.collector.trace.v1 TraceService."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    rx = Receiver("grpc")

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(  # the generated service's method name
            self, request: ExportTraceServiceRequest, context: Any
        ) -> ExportTraceServiceResponse:
            rx.accept(request.SerializeToString())
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    rx.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield rx
    finally:
        server.stop(grace=None).wait(10)
