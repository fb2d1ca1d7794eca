"""JSON a person hands the CLI: inline, `@file.json` or `-` (stdin), within stated limits.

Limits (README "Inputs on the command line"): at most `max_bytes()` bytes (16 MiB,
or `KEEL_MAX_INPUT_BYTES`) and `MAX_DEPTH` levels of nesting. Depth is checked
before parsing, so a deeply nested document is refused with one line instead of
exhausting the parser's stack (and what Keel stores always reads back).
"""

from __future__ import annotations

import json
import os
import re
import sys
from itertools import accumulate
from typing import Any

from keel.errors import ConfigError, InputError

MAX_DEPTH = 100
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def max_bytes() -> int:
    """The size limit: `KEEL_MAX_INPUT_BYTES` if set, else 16 MiB."""
    raw = os.environ.get("KEEL_MAX_INPUT_BYTES")
    if raw is None:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"KEEL_MAX_INPUT_BYTES must be a positive number of bytes, got {raw!r}")
    return value


def read_json(value: str, what: str) -> Any:
    """Parse `value`: JSON text, `@path` (read that file) or `-` (read stdin).

    Raises InputError (one line: what is wrong, what to do) for a missing file, text
    that is not UTF-8 or not JSON, or input over the size or depth limit.
    """
    limit = max_bytes()
    if value == "-":
        source = f"{what} from stdin"
        if sys.stdin.isatty():
            print(f"reading {what} from stdin (end with Ctrl-D)", file=sys.stderr)
        raw = sys.stdin.buffer.read(limit + 1)
    elif value.startswith("@"):
        path = value[1:]
        source = f"{what} @{path}"
        if not path:
            raise InputError(f"{what} @ needs a file name, e.g. {what} @input.json")
        try:
            with open(path, "rb") as f:
                raw = f.read(limit + 1)
        except OSError as exc:
            raise InputError(
                f"{source}: cannot read {path!r} ({exc.strerror or exc})", path=path
            ) from None
    else:
        source = what
        raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > limit:
        raise InputError(
            f"{source} is larger than the {_size(limit)} input limit: pass less data, or"
            " raise the limit with KEEL_MAX_INPUT_BYTES",
            limit=limit,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source} is not UTF-8 text (byte {exc.start})") from None
    return parse_json(text, source)


def parse_json(text: str, what: str) -> Any:
    """Parse JSON text, refusing more than `MAX_DEPTH` levels of nesting before parsing."""
    level = depth(text)
    if level > MAX_DEPTH:
        raise InputError(
            f"{what} is nested {level} levels deep; the limit is {MAX_DEPTH}. Flatten the"
            " data (for example pass a deep structure as a JSON string)",
            depth=level,
            limit=MAX_DEPTH,
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def depth(text: str) -> int:
    """How deeply JSON text nests arrays and objects (brackets inside strings ignored)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"
