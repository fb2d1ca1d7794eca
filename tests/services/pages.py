"""Reading the console's server-rendered pages in HTTP tests (no browser)."""

from __future__ import annotations

import html
import re


def csrf_of(page: str) -> str:
    """The first form's CSRF token, as a browser would submit it."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "page has no CSRF field"
    return found.group(1)


def element(page: str, element_id: str) -> str:
    """The text inside the first tag with this id (up to its first closing tag), unescaped."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found, f"no #{element_id} in page"
    return html.unescape(found.group(1)).strip()
