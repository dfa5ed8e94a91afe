"""The `zoo` command: list, info, download, cache; help with examples; errors as exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_hub import hub_card, publish

from zoo.cli.main import main
from zoo.hub import sha256_file


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "examples:" in capsys.readouterr().out
    for command in ("list", "info", "download", "cache"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"zoo {command}" in out


def test_list_info_download_cache_cycle(tmp_path, hub, cache, cards_dir, capsys):
    _, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    assert main(["list"]) == 0
    assert "tiny-hub-model" in capsys.readouterr().out
    assert main(["list", "--architectures"]) == 0
    assert "test-pair-potential" in capsys.readouterr().out

    assert main(["info", "tiny", "--no-card"]) == 0
    out = capsys.readouterr().out
    assert "mit" in out and "cached" in out and "no (zoo download tiny-hub-model)" in out

    assert main(["download", "tiny"]) == 0
    assert "cached at" in capsys.readouterr().out
    assert main(["info", "tiny-hub-model"]) == 0
    assert "yes" in capsys.readouterr().out

    assert main(["cache", "ls"]) == 0
    assert "tiny-hub-model" in capsys.readouterr().out
    assert main(["cache", "clear", "tiny"]) == 0
    assert "freed" in capsys.readouterr().out
    assert not list(cache.rglob("snapshots/*/model.safetensors"))
    assert sha256_file(folder / "model.safetensors")  # the published folder itself is untouched


def test_errors_exit_2(cache, capsys):
    assert main(["info", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 2


def test_console_script_installed():
    result = subprocess.run([sys.executable, "-m", "zoo.cli.main", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("zoo ")
