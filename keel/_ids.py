"""What an id a person chooses may hold: run ids (`App.start(id=...)`, `keel run --id`)
and console user names (`keel users add`, the API, the console).

Anything printable goes, `/`, `?`, `#`, `%`, `<`, quotes and any script included: the
console and the API put ids in URLs percent-encoded, one path segment each. Refused:
whitespace and control or format characters (invisible, or able to disguise one name as
another), more than 200 characters, and `.` / `..`, which browsers resolve away as path
segments before a request is sent, so no URL could reach them.
"""

from __future__ import annotations

import unicodedata

MAX_LEN = 200
RULE = "1-200 characters without whitespace or control characters, and not '.' or '..'"


def id_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be a `what` ("run id", "user name"), or None when it can."""
    if not value:
        return f"{what} '' is empty; use {RULE}"
    if len(value) > MAX_LEN:
        return f"{what} {value[:40]!r}... is {len(value)} characters; use {RULE}"
    if value in (".", ".."):
        return f"{what} {value!r} cannot be addressed in a URL; use {RULE}"
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            return f"{what} {value!r} contains {_name(ch)}; use {RULE}"
    return None


def _name(ch: str) -> str:
    if ch == " ":
        return "a space"
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character').lower()})"
