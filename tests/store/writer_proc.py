"""A separate process writing to a store, for the crash and two-writer conformance tests.

    python tests/store/writer_proc.py commit URL   # commit units in a loop until killed
    python tests/store/writer_proc.py race URL N   # create runs 0..N-1, claim until none left

Each prints one line per unit committed (`commit`) or one JSON line at the end (`race`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _REPO)

from keel.store import open_store  # noqa: E402
from tests.store.kit import claim, claimed, commit, create, step  # noqa: E402
from tests.store.people_kit import review  # noqa: E402

STEPS = 20  # entries per unit: a unit is big enough that a kill lands inside one
OUTPUT = b'"' + b"p" * 20_000 + b'"'


async def _commit_forever(url: str) -> None:
    store = open_store(url)
    await claimed(store, "crash", owner="W")
    i = 0
    while True:
        steps = [step("crash", f"u{i}-s{j}", i * STEPS + j, OUTPUT) for j in range(STEPS)]
        await commit(store, "crash", "W", *steps, reviews=[review(f"u{i}", "crash")])
        print(i, flush=True)
        i += 1


async def _race(url: str, n: int) -> None:
    store = open_store(url)
    me = f"worker-{os.getpid()}"
    created = [f"r{i}" for i in range(n) if (await create(store, f"r{i}"))[1]]
    got: list[str] = []
    while batch := await claim(store, me, limit=3):
        got += batch
    await store.close()
    print(json.dumps({"created": created, "claimed": got}), flush=True)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "commit":
        asyncio.run(_commit_forever(url))
    else:
        asyncio.run(_race(url, int(sys.argv[3])))
