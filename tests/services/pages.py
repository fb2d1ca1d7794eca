"""Reading the console's server-rendered pages in HTTP tests (no browser)."""

from __future__ import annotations

import html
import re

import httpx


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


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    """Sign in through the form, as a browser does: its CSRF field and cookie, then the token."""
    form = await client.get("/login")
    assert "keel_login_csrf" in client.cookies
    r = await client.post("/login", data={"csrf": csrf_of(form.text), "token": token, "next": ""})
    assert r.status_code == 303, r.text
