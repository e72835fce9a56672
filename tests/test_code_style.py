"""Code habits of the field: ruff (pinned in requirements.txt, configured in ruff.toml).

It checks the recipes, the tests, the benchmarks and the build's own code
(conf.py and docs/_ext). The rule set and the one rule left out are explained
in ruff.toml.
"""

import subprocess
import sys
from pathlib import Path

from conftest import REPO

RUFF = Path(sys.executable).with_name("ruff")
CHECKED = ["recipes", "tests", "benchmarks", "conf.py", "docs/_ext"]


def run_ruff(*paths, cwd=REPO):
    return subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", *map(str, paths)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing():
    result = run_ruff(*CHECKED)
    assert result.returncode == 0, f"ruff check found problems (fix them, or configure ruff.toml with a reason):\n" \
                                   f"{result.stdout}{result.stderr}"


def test_ruff_reports_what_it_finds(tmp_path):
    """The check can fail: an unused import and an unused loop variable in a copy of the configuration."""
    (tmp_path / "ruff.toml").write_text((REPO / "ruff.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\n\nfor item in range(3):\n    print('hi')\n")
    result = run_ruff("bad.py", cwd=tmp_path)
    assert result.returncode != 0
    assert "F401" in result.stdout and "B007" in result.stdout, result.stdout
