"""The documentation site builds with ``mkdocs build --strict``: no warning (broken link, missing anchor,
unreadable docstring, card that does not parse) goes unnoticed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    output = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "WARNING" not in result.stderr, result.stderr
    return output


def test_site_has_the_pages(site):
    for page in ("index.html", "installation/index.html", "quickstart/index.html", "benchmarks/index.html"):
        assert (site / page).is_file(), page
    for guide in ("ase", "finetuning", "generating-molecules", "new-model", "checkpoint-format", "converting"):
        assert (site / "guides" / guide / "index.html").is_file(), guide


def test_catalogue_has_a_page_per_card(site):
    from zoo.registry import builtin_cards_dir, parse_card

    paths = [p for p in builtin_cards_dir().glob("*.md") if p.name.lower() != "readme.md"]
    cards = sorted(parse_card(p.read_text(encoding="utf-8"), str(p)).name for p in paths)
    assert cards
    index = (site / "models" / "index.html").read_text()
    for name in cards:
        page = site / "models" / name / "index.html"
        assert page.is_file(), name
        assert name in index
        text = page.read_text()
        assert "How to load" in text and "Licence and citation" in text, name


def test_api_reference_is_rendered_from_the_docstrings(site):
    api = (site / "reference" / "zoo" / "index.html").read_text()
    assert "zoo.load" in api and "Load a pretrained model" in api  # zoo.load's docstring
    models = sorted(p.stem for p in (ROOT / "zoo" / "models").glob("[!_]*.py"))
    for module in models:
        assert (site / "reference" / "models" / module / "index.html").is_file(), module
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "zoo finetune" in cli and "usage:" in cli
