"""The triage example's eval suite: 40 realistic tickets, each run through the real
`triage` workflow (offline, with the scripted model) on a throwaway store, and scored
from its journal: the category and priority it recorded, the route it took (replied,
escalated to the support-ops queue, or failed on an unknown account), the tool and
model steps it made, and what its model calls cost.

Gate a change on it, against the committed baseline (exit 0 pass, 100 regression or
threshold failure, 1 harness error):

    keel eval examples/triage_eval.py:suite --baseline examples/data/triage_baseline.json

After an intended change, write the baseline again and commit it:

    keel eval examples/triage_eval.py:suite --save-baseline examples/data/triage_baseline.json
"""

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the sibling example, however this file is loaded
    sys.path.insert(0, str(_HERE))

# The approved drafts are "sent" to an outbox: the eval's go to a throwaway one, removed
# when the process exits.
if "KEEL_EXAMPLE_OUTBOX" not in os.environ:
    _outbox = tempfile.TemporaryDirectory(prefix="triage-eval-outbox-")
    os.environ["KEEL_EXAMPLE_OUTBOX"] = _outbox.name

from support_triage import triage  # noqa: E402

from keel import evals  # noqa: E402

# A run's route, read from its journal: the first of these steps it took.
ROUTES = {"escalated": "escalation", "replied": "send_reply"}


async def reviewer(app: Any, run: Any, case: evals.Case) -> None:
    """The suite's reviewer: approves every draft the workflow asks about (its
    "approval" signal). Escalations to support-ops are left waiting: that is the route."""
    if "approval" in run.waiting_on:
        await app.signal(run.id, "approval", {"approved": True, "reviewer": "keel-eval"})


suite = evals.Suite(
    "triage",
    triage,
    _HERE / "data" / "triage_cases.jsonl",
    scorers=[
        evals.fields("category", source="state", name="category"),
        evals.fields("priority", source="state", name="priority"),
        evals.route(ROUTES, default="failed"),
        # the reply's body is generated: any body will do, the recipient must be right
        evals.trajectory(mode="strict", args={"send_reply": {"body": evals.ignore()}}),
        evals.budget(max_cost_usd=0.001),
    ],
    thresholds={
        "category": 0.8,
        "priority": 0.7,
        "route": 1.0,
        "trajectory": 0.95,
        "budget": 1.0,
        "category[billing]": 0.8,
    },
    approvals=reviewer,
)
