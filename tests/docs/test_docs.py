"""Every ```python and ```bash block of the documentation runs, offline, so the docs cannot rot.

The blocks of one page run in order in a fresh temporary directory: python blocks in one namespace (in this
process, as a reader pasting them into one Python session), bash blocks with ``bash -euo pipefail`` and the
venv's ``bin`` first on ``PATH`` (so ``zoo`` is the installed command). Nothing may reach the network:
``HF_HUB_OFFLINE=1``, ``ZOO_OFFLINE=1`` and an empty, temporary ``HF_HOME``.

A block that cannot run here (it needs a GPU or the internet) is preceded by
``<!-- docs-test: skip (the reason) -->``; those are listed by ``pytest -rs`` and kept few.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import zoo.converters
from zoo import registry

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = ("python", "bash")
NOT_RUN = ("yaml", "text", "json", "toml")  # shown, never executed (files, outputs)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\S*)[^\n]*\n(?P<body>.*?)^(?P=indent)```\s*$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
MAX_SKIPPED = 12


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: language, code, first line (1-based) and skip reason."""

    page: str
    lang: str
    code: str
    line: int
    skip: str | None

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def page_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    text = path.read_text(encoding="utf-8")
    blocks, previous_end = [], 0
    for match in FENCE.finditer(text):
        before = text[previous_end : match.start()].rstrip()
        skip = SKIP.search(before.splitlines()[-1]) if before else None
        line = text.count("\n", 0, match.start()) + 2
        code = textwrap.dedent(match.group("body"))
        page = path.relative_to(DOCS).as_posix()
        blocks.append(Block(page, match.group("lang"), code, line, skip.group("reason").strip() if skip else None))
        previous_end = match.end()
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


ALL_BLOCKS = [block for page in pages() for block in page_blocks(page)]
PAGES_TO_RUN = sorted({b.page for b in ALL_BLOCKS if b.lang in RUN and b.skip is None})


def test_every_block_has_a_known_language():
    unknown = [f"{b.where} ```{b.lang}" for b in ALL_BLOCKS if b.lang not in RUN + NOT_RUN]
    assert not unknown, f"label blocks with one of {RUN + NOT_RUN} (python and bash run in this test): {unknown}"


def test_skipped_blocks_are_few_and_give_a_reason():
    skipped = [b for b in ALL_BLOCKS if b.skip is not None]
    assert all(b.lang in RUN for b in skipped), [b.where for b in skipped if b.lang not in RUN]
    assert len(skipped) <= MAX_SKIPPED, [f"{b.where}: {b.skip}" for b in skipped]
    assert sum(b.lang in RUN and b.skip is None for b in ALL_BLOCKS) >= 30, "the docs lost their examples"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.skip is not None], ids=lambda b: b.where)
def test_marked_block_is_not_run(block):
    pytest.skip(f"{block.where} is marked: {block.skip}")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory, an empty offline cache, and zoo's registries restored afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "hf-home"
    monkeypatch.chdir(work)
    for key, value in {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": "1",
        "ZOO_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_MKDOCS_2_WARNING": "1",
        "OMP_NUM_THREADS": "1",  # tiny examples: one thread each is faster than two threads fighting
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("ZOO_CACHE", "ZOO_CARDS_PATH", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    registry._import_model_families()  # register the built-in families before taking the snapshot
    architectures = dict(registry._ARCHITECTURES)
    card_dirs = list(registry._EXTRA_CARD_DIRS)
    converters = dict(zoo.converters._CONVERTERS)
    dtype, rng, threads = torch.get_default_dtype(), torch.get_rng_state(), torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield work
    registry._ARCHITECTURES.clear()
    registry._ARCHITECTURES.update(architectures)
    registry._EXTRA_CARD_DIRS[:] = card_dirs
    registry._load_cards_from.cache_clear()
    zoo.converters._CONVERTERS.clear()
    zoo.converters._CONVERTERS.update(converters)
    torch.set_default_dtype(dtype)
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])  # zoo train sets it


def run_python(block: Block, namespace: dict) -> None:
    try:
        exec(compile(block.code, block.where, "exec"), namespace)
    except Exception as exc:
        raise AssertionError(f"the python block at {block.where} failed: {exc!r}\n\n{block.code}") from exc


def run_bash(block: Block, cwd: Path) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"the bash block at {block.where} exited with {result.returncode}\n\n{block.code}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


@pytest.mark.parametrize("page", PAGES_TO_RUN)
def test_page_runs(page, sandbox):
    namespace: dict = {"__name__": "__main__"}
    for block in (b for b in ALL_BLOCKS if b.page == page and b.lang in RUN and b.skip is None):
        if block.lang == "python":
            run_python(block, namespace)
        else:
            run_bash(block, sandbox)
