"""Redaction and size limits for everything that leaves the journal (spans, exports, logs).

The journal keeps step outputs as they are (replay needs them); traces never see a
secret: API keys, bearer tokens and configured fields are masked, long values are
truncated with a marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import pydantic_core

MASK = "[REDACTED]"
DEFAULT_PATTERNS = (
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic style keys
    r"(?i:bearer)\s+[A-Za-z0-9._\-+/=]{12,}",
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
)
DEFAULT_FIELDS = (
    "api_key",
    "apikey",
    "authorization",
    "password",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "private_key",
)


class Redactor:
    """Masks secrets by pattern and by field name, and truncates long values.

    Example:
        r = Redactor(extra_patterns=[r"ACME-\\d{6}"], extra_fields=["ssn"], max_chars=2048)
        r.text('{"api_key": "sk-..."}')
    """

    def __init__(
        self,
        extra_patterns: Iterable[str] = (),
        extra_fields: Iterable[str] = (),
        max_chars: int = 4096,
    ) -> None:
        self.pattern = re.compile(
            "|".join(f"(?:{p})" for p in (*DEFAULT_PATTERNS, *extra_patterns))
        )
        self.fields = {f.lower() for f in (*DEFAULT_FIELDS, *extra_fields)}
        self.max_chars = max_chars
        # Literal fragments every default pattern contains; custom patterns disable the
        # pre-check (they can match anything).
        extra = tuple(extra_patterns)
        self._markers: tuple[str, ...] = (
            ("sk-", "earer", "EARER", "AKIA", "gh", "xox", "AIza", "eyJ") if not extra else ("",)
        )

    def value(self, value: Any) -> Any:
        """A JSON-like value with secret fields masked and secret-looking strings masked."""
        if isinstance(value, str):
            return self.pattern.sub(MASK, value) if self._suspect(value) else value
        if isinstance(value, dict):
            return {
                k: (
                    MASK if str(k).lower() in self.fields and v not in (None, "") else self.value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _suspect(self, text: str) -> bool:
        """A cheap pre-check: only text with a secret-like marker pays for the regex."""
        return any(m in text for m in self._markers)

    def text(self, value: Any) -> str:
        """`value` as redacted, truncated text for a span attribute."""
        if value is None or isinstance(value, bool | int | float):
            return str(value)
        if isinstance(value, str) and not self._suspect(value):
            return self.truncate(value)
        if not isinstance(value, str):
            # models and dataclasses as JSON data first, so their secret fields are masked too
            plain = pydantic_core.to_jsonable_python(value, fallback=str)
            value = json.dumps(self.value(plain), default=str, ensure_ascii=False)
        else:
            value = self.pattern.sub(MASK, value)
        return self.truncate(value)

    def json_text(self, value: Any) -> str:
        """`value` as redacted JSON that stays valid JSON over the size limit: its longest
        strings are cut (each with the marker), not the text."""
        plain = self.value(pydantic_core.to_jsonable_python(value, fallback=str))
        text = json.dumps(plain, default=str, ensure_ascii=False)
        if len(text) <= self.max_chars:
            return text
        # The largest per-string cap that fits; short strings (roles, types, ids) stay whole.
        lo, hi, best = _MIN_CAP, max(_string_lengths(plain), default=0), None
        while lo <= hi:
            cap = (lo + hi) // 2
            cut = json.dumps(_cap(plain, cap, self.truncate), default=str, ensure_ascii=False)
            if len(cut) <= self.max_chars:
                best, lo = cut, cap + 1
            else:
                hi = cap - 1
        return best if best is not None else self.truncate(text)  # too many parts: cut it

    def truncate(self, text: str, limit: int | None = None) -> str:
        limit = self.max_chars if limit is None else limit
        if len(text) <= limit:
            return text
        return f"{text[:limit]}{_MARKER.format(len(text) - limit)}"


_MARKER = "…[truncated {} chars; full value in the journal]"
_MIN_CAP = 64


def _string_lengths(value: Any) -> Iterable[int]:
    if isinstance(value, str):
        yield len(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_lengths(v)
    elif isinstance(value, list):
        for v in value:
            yield from _string_lengths(v)


def _cap(value: Any, cap: int, cut: Any) -> Any:
    """`value` with every string longer than `cap` cut to `cap` (and marked)."""
    if isinstance(value, str):
        return cut(value, cap)
    if isinstance(value, dict):
        return {k: _cap(v, cap, cut) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap(v, cap, cut) for v in value]
    return value
