"""Every complete Python example in the README and docs/ runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.limits import WAIT

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _programs() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        for n, code in enumerate(blocks):
            if "__main__" in code:  # a complete program, not a fragment
                found.append((f"{page.name}#{n}", code))
    return found


@pytest.mark.parametrize(("where", "code"), _programs(), ids=[w for w, _ in _programs()])
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KEEL_POLL_INTERVAL": "0.02"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
    # each program prints what its comments promise; spot-check the final line
    promised = re.findall(r"print\(.*\)\s+#\s*(.+)", code)
    last_line = proc.stdout.strip().splitlines()[-1]
    assert promised, f"{where} has no commented print to check"
    expected = re.findall(r"#\s*(\{.*\})", code)
    if expected:
        assert last_line == expected[-1].strip()


def test_there_are_runnable_examples() -> None:
    names = [w for w, _ in _programs()]
    assert any(n.startswith("README") for n in names)
    assert any(n.startswith("recovery") for n in names)
