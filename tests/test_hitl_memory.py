"""10,000 runs waiting at an approval gate keep a worker's memory flat: a waiting run
is rows in the store, not a coroutine (each would hold a 64 KiB ballast here).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.apps.harness import Harness
from tests.apps.hitl_app import BALLAST_BYTES

pytestmark = pytest.mark.slow

APP = "tests.apps.hitl_app"
FIRST = 1_000
TOTAL = 10_000
MAX_GROWTH_PER_RUN = 20 * 1024


async def test_ten_thousand_pending_approvals_keep_worker_memory_flat(
    worker_harness: Harness,
) -> None:
    h = worker_harness
    h.base_env["KEEL_LEASE_SECONDS"] = "30"
    app = h.app(APP)
    worker = h.spawn(APP, KEEL_CONCURRENCY=100)
    await h.wait_ready(worker)

    async def start(lo: int, hi: int) -> None:
        for n in range(lo, hi):
            await app.start("parked", {"n": n}, id=f"park-{n:05d}", execute=False)

    async def all_waiting(count: int) -> None:
        await h.wait_until(
            lambda: h.status_counts().get("WAITING", 0) == count,
            timeout=120,
            what=f"{count} runs waiting for approval",
            procs=[worker],
            interval=0.05,
        )
        assert h.status_counts() == {"WAITING": count}

    await start(0, FIRST)
    await all_waiting(FIRST)
    await h.collect(worker)
    rss_first = h.rss(worker)

    await start(FIRST, TOTAL)
    await all_waiting(TOTAL)
    await h.collect(worker)
    rss_all = h.rss(worker)

    growth = (rss_all - rss_first) / (TOTAL - FIRST)
    assert growth < MAX_GROWTH_PER_RUN, (
        f"worker RSS grew {growth / 1024:.1f} KiB per additional run waiting for approval "
        f"({rss_first / 2**20:.1f} MiB -> {rss_all / 2**20:.1f} MiB)"
    )
    # Parked durably: one pending request and review step each, no lease, nothing ran.
    pending = h.store(lambda s: s.list_reviews(status="pending", limit=2 * TOTAL))
    assert Counter((r.kind, r.queue) for r in pending) == {("approval", "grants"): TOTAL}
    steps = h.all_steps()
    assert sum(1 for s in steps if s.kind.value == "review" and s.status.value == "pending") == (
        TOTAL
    )
    assert [s.key for s in steps if s.kind.value == "tool"] == []
    assert [r.id for r in h.runs() if r.lease_owner is not None] == []

    chosen = [0, 1, 4_999, 9_998, 9_999]
    for n in chosen:
        req = await app.approvals.get(f"park-{n:05d}:approval:grant#0")
        assert req.args == {"n": n}
        await app.approvals.approve(req.id, by="gwen")
    for n in chosen:
        info = await h.wait_status(app, f"park-{n:05d}", "SUCCEEDED", procs=[worker])
        assert info.result == n + BALLAST_BYTES
    assert h.status_counts() == {"WAITING": TOTAL - len(chosen), "SUCCEEDED": len(chosen)}
