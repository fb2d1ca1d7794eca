"""Ask an outside oracle once: a feature of your own on Keel's durable-operation primitive.

    ask the weather desk (a journaled operation: WAITS for its answer) -> book a carrier

The question goes to an outside inbox (a weather desk, an expert, any service that
answers later), the run waits for the answer as a signal and holds nothing meanwhile,
and once answered the recorded answer is replayed: the desk is never asked again.

    keel run examples/oracle.py:plan_delivery --id ord-7781 \\
        --input '{"order_id": "ord-7781", "city": "Bergen"}'     # WAITING on oracle:oracle#0
    keel signal ord-7781 oracle:oracle#0 --payload '"yes, heavy rain"'
    keel run examples/oracle.py:plan_delivery --id ord-7781      # SUCCEEDED: a covered van
"""

import json
import os
from pathlib import Path

import keel
from keel.types import StepKind

app = keel.App()


def inbox() -> Path:
    """The oracle's inbox: one JSON line per question, keyed by its idempotency id."""
    return Path(os.environ.get("KEEL_EXAMPLE_OUTBOX") or ".keel/outbox") / "oracle.jsonl"


def hand_over(ask_id: str, signal: str, question: str) -> None:
    """Put the question in the inbox unless `ask_id` is already there: resending is safe."""
    path = inbox()
    lines = path.read_text().splitlines() if path.exists() else []
    if any(json.loads(line)["id"] == ask_id for line in lines):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # the answer goes back as `keel signal RUN SIGNAL`
        f.write(json.dumps({"id": ask_id, "signal": signal, "question": question}) + "\n")


async def ask_oracle(ctx: keel.Context, question: str, timeout: float = 24 * 3600) -> str:
    """Ask once; wait durably for the answer; replay it after any restart."""
    op = ctx.operation("oracle", question, kind=StepKind.SIGNAL)
    if op.done:  # answered in an earlier execution: nothing is asked again
        return str(await op.replay(str))
    if not op.begun:  # record that we ask before the question leaves, so a crash resends
        await op.begin()
    # op.run_id:op.key names this question everywhere: a resent question is a no-op
    hand_over(f"{op.run_id}:{op.key}", f"oracle:{op.key}", question)
    try:
        answer = await op.wait(f"oracle:{op.key}", "answer", 0, timeout)
    except keel.SignalTimeout as exc:
        await op.fail(exc)  # journaled: a replay raises the same error
    return str(await op.finish(str(answer)))


def reserve(order_id: str, carrier: str) -> str:
    """A stand-in for the carrier's booking API: the booking's reference."""
    return f"{carrier.replace(' ', '-')}/{order_id}"


@app.tool()
async def book_carrier(order_id: str, carrier: str) -> str:
    return reserve(order_id, carrier)


@app.workflow()
async def plan_delivery(ctx: keel.Context, order_id: str, city: str) -> dict[str, str]:
    forecast = await ask_oracle(ctx, f"Will it rain in {city} tomorrow?")
    carrier = "covered van" if forecast.lower().startswith("yes") else "bike courier"
    # a crash after this re-runs the workflow: the forecast then comes back from the journal
    booking = await ctx.call(book_carrier, order_id, carrier)
    return {"order_id": order_id, "city": city, "forecast": forecast, "booking": booking}
