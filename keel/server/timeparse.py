"""Times typed by people (API query strings, CLI options, console filters) as epoch seconds.

Accepted: ISO 8601 (`2026-11-25`, `2026-11-25T10:00`, `2026-11-25 10:00:30+02:00`,
`...Z`), naive meaning UTC; or epoch seconds (`1795600000`, `1795600000.5`).
A string of digits alone is always read as epoch seconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from keel.errors import InputError

_EPOCH = re.compile(r"\d{1,12}(\.\d+)?")
HINT = "use ISO 8601 (e.g. 2026-11-25T10:00, UTC unless it has an offset) or epoch seconds"


def parse_time(text: str, name: str) -> float:
    """`text` as epoch seconds; `InputError` naming `name` when it is not a time."""
    value = text.strip()
    if _EPOCH.fullmatch(value):
        return float(value)
    try:
        parsed = datetime.fromisoformat(value) if value else None
    except ValueError:
        parsed = None
    if parsed is None:
        shown = text if len(text) <= 64 else text[:61] + "..."
        raise InputError(
            f"{name} {shown!r} is not a time: {HINT}",
            problems=[f"{name}: not an ISO 8601 time or epoch seconds"],
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_HINT = (
    "use a number and a unit, e.g. 30d, 12h, 90m, 45s or 2w"
    " (d days, h hours, m minutes, s seconds, w weeks)"
)


def parse_duration(text: str, name: str) -> float:
    """`text` (`30d`, `12h`, `90m`, `45s`, `2w`) as seconds; `InputError` naming `name`
    when it is not a duration longer than zero."""
    match = _DURATION.fullmatch(text.strip().lower())
    shown = text if len(text) <= 64 else text[:61] + "..."
    if match is None:
        raise InputError(
            f"{name} {shown!r} is not a duration: {DURATION_HINT}",
            problems=[f"{name}: not a duration"],
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise InputError(
            f"{name} {shown!r} is zero: give a duration longer than that, e.g. 30d",
            problems=[f"{name}: zero"],
        )
    return seconds
