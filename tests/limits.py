"""Upper bounds for waits in tests ("until the engine got there"), never timings.

Every wait returns as soon as its condition holds, so a generous bound costs nothing
when things work. It has to cover a loaded 2-core machine: a cold LiteLLM import alone
took 15-30 s there, and a subprocess worker's start-up several seconds.
KEEL_TEST_TIME_SCALE multiplies every bound (e.g. 2 for a slower machine).
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("KEEL_TEST_TIME_SCALE", "1") or 1)
WAIT = 90.0 * SCALE  # a run to settle or finish, a subprocess to start or stop
