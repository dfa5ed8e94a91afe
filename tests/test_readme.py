"""The README's main-job commands run as written, offline, from the installed package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def main_job_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- main-job[^>]*-->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no main-job block"
    return match.group(1)


def test_readme_main_job_runs_offline(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "empty-cache")  # nothing cached: the weights must come from the package
    result = subprocess.run(
        ["bash", "-e", "-c", main_job_block()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged after" in result.stdout and "NOT" not in result.stdout
    assert (tmp_path / "slab-relaxed.extxyz").is_file()
