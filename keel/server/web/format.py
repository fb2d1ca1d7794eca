"""Jinja filters: times, ages, durations, JSON and URL-safe ids, all as plain text to escape."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from keel.server.paths import url_id


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """A coarse human duration: 45 s, 12 min, 3 h, 2 d."""
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "—"
    return f"{span((now or time.time()) - ts)} ago"


def due(ts: float | None, now: float | None = None) -> str:
    """A deadline relative to now: `in 2 h` or `overdue by 5 min`."""
    if ts is None:
        return "no deadline"
    left = ts - (now or time.time())
    return f"in {span(left)}" if left >= 0 else f"overdue by {span(left)}"


def duration(seconds: float | None) -> str:
    """A precise duration for timings: 0.4 ms, 12 ms, 1.25 s, 3 min."""
    if seconds is None:
        return "—"
    if seconds < 0.001:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return span(seconds)


def preview(value: Any, width: int = 90) -> str:
    """One line of a value (strings as they are, the rest as JSON), cut to `width`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def call(tool: str, args: Any, width: int = 120) -> str:
    """A proposed call on one line, `refund(order="o-1", amount=40)`, cut to `width`."""
    if isinstance(args, dict):
        inner = ", ".join(
            f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in args.items()
        )
    else:
        inner = "" if args is None else preview(args, width)
    return preview(f"{tool}({inner})", width)


def pretty(value: Any) -> str:
    """Indented JSON (strings stay strings); the template escapes it."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=False)


def causes(error: Any) -> list[Any]:
    """The cause chain under a structured error (at most 10 deep), for display."""
    out: list[Any] = []
    cur = getattr(error, "cause", None)
    while cur is not None and len(out) < 10:
        out.append(cur)
        cur = cur.cause
    return out


def usd(value: float | None) -> str:
    if not value:
        return "—"
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


FILTERS = {
    "when": when,
    "ago": ago,
    "due": due,
    "duration": duration,
    "pretty": pretty,
    "url_id": url_id,
    "usd": usd,
    "causes": causes,
}
