"""CI runs exactly the README's test command (the suite, then the slicer-core tier)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Run the tests"):]
    command = re.search(r"```\n(.*?)\n```", section, re.S).group(1).strip()
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == command
    assert command.endswith("&& bash Testing/run.sh")
