"""The console's Drift page: every monitor's status from the store the console reads,
and a server-side SVG plot of each (per category or the mean per bucket, the reference
band, where the recent window starts); signed-out visitors get no page."""

from __future__ import annotations

import html
import random
import re

import httpx

import keel
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.store import DriftMonitorSpec, DriftValue
from tests.services.pages import sign_in


async def _seed(app: keel.App) -> None:
    rng = random.Random(11)
    dist = keel.drift.Distribution("category")
    cost = keel.drift.Metric("cost_usd")
    values = [
        DriftValue(
            "triage",
            dist.key,
            f"t{i}",
            1000.0 + i,
            None,
            rng.choices(["billing", "<outage>"], [0.8, 0.2] if i < 600 else [0.3, 0.7])[0],
        )
        for i in range(700)
    ]
    values += [
        DriftValue("triage", cost.key, f"t{i}", 1000.0 + i, rng.gauss(0.002, 0.0002))
        for i in range(700)
    ]
    await app.store.put_drift_monitors(
        [DriftMonitorSpec("triage", m.key, m.spec(), 1.0) for m in (dist, cost)]
    )
    await app.store.add_drift_values(values)


async def test_the_drift_page_shows_each_monitor_and_its_plot(store_url: str) -> None:
    app = keel.App(store_url)
    await _seed(app)
    server = create_app(app, secure_cookies=False)
    token = await add_user(app.store, "vera", "viewer", [])
    transport = httpx.ASGITransport(app=server, client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
        assert (await c.get("/drift")).status_code in (303, 401)  # signed out: no page
        await sign_in(c, token)
        page = (await c.get("/drift")).text
        table = html.unescape(re.search(r'<table id="monitors".*?</table>', page, re.S).group(0))  # type: ignore[union-attr]
        assert re.search(r'data-monitor="triage/distribution:category".*?>alert<', table, re.S)
        assert re.search(r'data-monitor="triage/metric:cost_usd".*?>ok<', table, re.S)
        assert "last 100 vs 500 (the 500 before)" in table
        plots = re.findall(r'<svg class="drift-plot".*?</svg>', page, re.S)
        assert len(plots) == 2
        shares, costs = plots
        assert 'data-key="billing"' in shares and 'data-key="&lt;outage&gt;"' in shares  # escaped
        assert shares.count('class="band"') == 2 and 'class="recent"' in shares
        assert 'data-key="value"' in costs and '<rect class="band"' in costs
        assert "<script" not in page.split("</header>", 1)[1]
        only = (await c.get("/drift", params={"workflow": "nope"})).text
        assert 'id="drift-empty"' in only
    await app.close()
