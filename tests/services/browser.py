"""Headless Chromium through Playwright's sync API, for browser tests (`-m browser`).

The browser is Debian's /usr/bin/chromium (apt, via scripts/services.sh); Playwright
never downloads one. Tests are plain `def` functions: the sync API runs its own event
loop, so nothing here touches pytest-asyncio's. Each test gets a new browser context:
its own cookies and storage (a fresh profile), closed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.services.redis_server import missing

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install chromium; pip install playwright"
ARGS = [
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (`playwright.sync_api.Browser`); closed on exit."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium ({CHROMIUM})", INSTALL)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package", INSTALL)
        raise AssertionError("unreachable") from None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_context(browser: Any, base_url: str | None = None, **options: Any) -> Iterator[Any]:
    """A fresh context (profile) with short default timeouts; every dialog is recorded in
    `context.dialogs` and dismissed, so a test can assert none ever opened."""
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(10_000)
    context.set_default_navigation_timeout(15_000)
    dialogs: list[str] = []
    context.dialogs = dialogs

    def on_page(page: Any) -> None:
        def on_dialog(dialog: Any) -> None:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)

    context.on("page", on_page)
    try:
        yield context
    finally:
        context.close()
