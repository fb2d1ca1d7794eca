"""Reading back the JSON Keel wrote: shared by the engine and the stores (layer: types)."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core


def from_json(data: bytes | str) -> Any:
    """Parse JSON Keel stored, however deep it nests.

    Example:
        from_json(b'{"a": [1, 2]}')  # {"a": [1, 2]}
    """
    try:
        return pydantic_core.from_json(data)
    except ValueError as exc:
        # pydantic_core parses 200 levels deep but writes up to 254: read what it wrote.
        if "recursion limit" not in str(exc):
            raise
        return json.loads(data)
