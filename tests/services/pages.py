"""Reading the console's server-rendered pages in HTTP tests (no browser)."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import httpx

import keel
from tests.limits import WAIT


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


async def sample_of(app: Any, run_id: str) -> Any:
    """The run's sample: it is opened just after the run ends (keel/hitl/sampling.py), so
    on a store reached over the network it may not be there yet when the result is."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        try:
            return await app.reviews.get(f"{run_id}:sample")
        except keel.RunNotFound:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)
