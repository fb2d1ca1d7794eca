"""Redaction cost: µs per call of the App's default redactor on typical payloads.

    python bench/redact.py [--number N]

Clean text is the common case (most prompts, tool arguments and results hold no
secret): the pre-check (literals looked for with `in`, digits via one bytes
translate) should keep it near the cost of scanning the string a few times. Text
with secrets pays for the regexes. Each figure is the best of 5 repeats.
See bench/README.md, "Redaction".
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keel.observe.redact import Redactor

SHORT = "Ticket 1234 from Ada: the invoice total looks wrong"
PROSE = ("The quarterly report shows revenue of 1,234,567 across 12 regions. " * 16)[:1024]
JSON_TEXT = ('{"id": "T-1001", "subject": "hello there", "priority": 2, "tags": ["a"]} ' * 14)[
    :1024
]
SECRETS = (
    "Config: OPENAI_API_KEY=sk-proj-Q7fA2kLm9XzQ7fA2kLm9Xz password=hunter2 "
    "Authorization: Basic dXNlcjpwYXNz card 4111 1111 1111 1111 "
) * 4
PAYLOAD = {
    "ticket": {"id": "T-1001", "subject": SHORT, "body": PROSE, "priority": 2},
    "account_id": "acct_42",
    "tags": ["billing", "urgent"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    n = parser.parse_args().number
    default = Redactor()
    custom = Redactor(fields=["ssn", "*_pin"], patterns=[Redactor.EMAIL, r"ACME-\d{6}"])
    cases = [
        ("short clean string (51 B)", SHORT),
        ("clean prose, 1 KB", PROSE),
        ("clean JSON text, 1 KB", JSON_TEXT),
        (f"text with 4 kinds of secrets x4 ({len(SECRETS)} B)", SECRETS),
        ("a dict payload (1.2 KB of strings)", PAYLOAD),
    ]
    print(f"{'case':48} {'default µs':>11} {'+custom µs':>11}")
    for name, value in cases:
        row = []
        for r in (default, custom):
            best = min(timeit.repeat(lambda r=r, v=value: r.text(v), number=n, repeat=5))
            row.append(best / n * 1e6)
        print(f"{name:48} {row[0]:11.2f} {row[1]:11.2f}")


if __name__ == "__main__":
    main()
