"""Drift monitoring, compact: a ticket classifier whose model starts seeing a surge of
outages after 60 tickets, less sure of itself, caught by the monitors declared on the
workflow (docs/drift.md). Offline: the model is a seeded ScriptedModel.

    python examples/drift_classifier.py      # 80 tickets, then the monitors' verdicts
    keel drift report                        # the same, from the store (KEEL_STORE)

The windows are small so the demo is short; the defaults (a recent window of 100 runs
against the 500 before) are for production traffic.
"""

import asyncio
import json
import random

from pydantic import BaseModel

import keel


class Label(BaseModel):
    category: str


_rng = random.Random(1)
_calls = 0


def _classifier(messages: list[dict]) -> keel.llm.Reply:
    """20% outages for 60 tickets, then 80%, with lower token probabilities."""
    global _calls
    _calls += 1
    surge = _calls > 60
    category = "outage" if _rng.random() < (0.8 if surge else 0.2) else "billing"
    logprob = _rng.gauss(-0.4 if surge else -0.1, 0.02)
    return keel.llm.Reply(content=json.dumps({"category": category}), logprobs=[logprob] * 4)


app = keel.App(llm=keel.llm.ScriptedModel(_classifier))  # store: KEEL_STORE or .keel/keel.db
SMALL = {"window": 20, "reference": keel.drift.Rolling(40), "min_sample": 15}


@app.workflow(
    monitors=[
        keel.drift.Distribution("category", **SMALL),
        keel.drift.Confidence("category", **SMALL),
    ]
)
async def classify_ticket(ctx: keel.Context, text: str) -> dict:
    label = await ctx.llm.structured(Label, prompt=f"Classify this support ticket: {text}")
    return label.model_dump()


async def main(tickets: int = 80) -> list[dict]:
    alerts: list[dict] = []
    app.drift.on_alert(alerts.append)  # or a webhook URL
    for i in range(tickets):
        await (await app.start("classify_ticket", {"text": f"ticket {i}"})).result(timeout=60)
    await app.stop_worker()  # lets the observer finish its background writes
    for e in alerts:
        print(
            f"alert: {e['monitor']} {e['statistic']:.2f} > {e['threshold']} (p={e['p_value']:.1g})"
        )
    await app.close()
    return alerts


if __name__ == "__main__":
    asyncio.run(main())
