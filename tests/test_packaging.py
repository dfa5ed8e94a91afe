"""A non-editable install ships the model cards: list_models works from the installed wheel alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARD = """---
license: mit
library_name: zoo
zoo:
  name: wheel-probe-model
  architecture: test-pair-potential
  task: potential
  source: {kind: embedded, path: wheel-probe-model}
---
Probe card written by the packaging test.
"""


def test_wheel_ships_cards(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "zoo", "cards"):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    (source / "cards" / "wheel-probe-model.md").write_text(CARD)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            source,
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("zoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "zoo/_cards/wheel-probe-model.md" in names
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", target, wheel],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    probe = "import zoo; print(zoo.__file__); print(zoo.list_models())"
    env = {**os.environ, "PYTHONPATH": str(target), "ZOO_CARDS_PATH": ""}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, models = result.stdout.splitlines()
    assert location.startswith(str(target))
    assert "wheel-probe-model" in models
