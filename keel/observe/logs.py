"""Structured logs that carry the trace and span ids of the step they were written in,
with secrets masked by the App's redactor."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from keel.observe import ids
from keel.observe.redact import Redactor


class TraceContextFilter(logging.Filter):
    """Adds `trace_id`, `span_id`, `run_id` and `step` to records logged inside a step."""

    def filter(self, record: logging.LogRecord) -> bool:
        from keel.engine.execution import current_step

        info = current_step()
        if info is not None:
            record.trace_id = ids.hex_trace(ids.trace_id(info.run_id))
            record.span_id = ids.hex_span(ids.step_span_id(info.run_id, info.key))
            record.run_id = info.run_id
            record.step = info.key
        return True


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any formatter sees them
    (the record is rewritten: handlers after this one get the masked text too).

    Example: `handler.addFilter(keel.observe.RedactingFilter(app.redactor))`
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self.redactor.scrub
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


# Keel's own loggers: their records (a worker's crash traceback, a failed notification)
# are masked where they are made, whatever handler prints them.
KEEL_LOGGERS = (
    "keel",
    "keel.worker",
    "keel.hooks",
    "keel.observe",
    "keel.hitl",
    "keel.server",
    "keel.memory",
    "keel.drift",
    "keel.temporal",
)


def guard_keel_loggers(redactor: Redactor) -> None:
    """Mask secrets in every record Keel's own loggers make (once per process: the first
    App that starts work sets the redactor)."""
    for name in KEEL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter(redactor))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace context when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("trace_id", "span_id", "run_id", "step"):
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info or record.exc_text:
            out["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(out, default=str)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json_lines: bool = True,
    logger: logging.Logger | None = None,
    redactor: Redactor | None = None,
) -> logging.Handler:
    """Log to stderr with trace context (JSON lines by default), secrets masked by
    `redactor` (default: keel.toml's `[keel.redact]` rules); returns the handler.

    Example: `keel.observe.configure_logging("INFO", redactor=app.redactor)`
    """
    if redactor is None:
        from keel.config import section

        redactor = Redactor.from_config(section("redact"))
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.addFilter(RedactingFilter(redactor))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    target = logger or logging.getLogger()
    target.addHandler(handler)
    target.setLevel(level)
    return handler
