"""Alias: Keel on Temporal against raw temporalio is bench/engine.py's Temporal section.

    python bench/temporal.py [--quick] [--trials N] [--workloads ...] [--json out.json]

is `python bench/engine.py --only keel,keel-temporal,temporal,temporal-local ...`
(bench/_temporal_systems.py; bench/README.md, "Keel on Temporal").
"""

from __future__ import annotations

import sys

import engine

SYSTEMS = "keel,keel-temporal,temporal,temporal-local"

if __name__ == "__main__":
    sys.exit(engine.main(["--only", SYSTEMS, *sys.argv[1:]]))
