"""The memo keys a Keel run keeps on its Temporal workflow (no temporalio import)."""

from __future__ import annotations

MEMO_TENANT = "keel.tenant"  # `ctx.tenant`: App.start(tenant=...)
MEMO_SESSION = "keel.session"  # `ctx.session_id`: App.start(session=...), else the run id

__all__ = ["MEMO_SESSION", "MEMO_TENANT"]
