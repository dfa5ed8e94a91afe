"""`zoo push` / push_to_hub: the folder is checked, then exactly the three checkpoint files are handed to
huggingface_hub's upload. This test stops at the prepared folder: HfApi's network calls are recorded, not made."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi

import zoo
from zoo.checkpoint import CheckpointError
from zoo.cli.main import main


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def install(self, monkeypatch) -> None:
        def create_repo(api, repo_id, **kwargs):
            self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(api, **kwargs):
            self.calls.append(("upload_folder", kwargs))
            return type("Commit", (), {"oid": "d" * 40})()

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_uploads_the_checkpoint_files(tmp_path, monkeypatch, capsys):
    recorder = Recorder()
    recorder.install(monkeypatch)
    folder = zoo.save_pretrained(zoo.create_model("test-pair-potential"), tmp_path / "model")
    (folder / "notes.txt").write_text("not part of the checkpoint")
    assert main(["push", str(folder), "org/fine-tuned", "--private"]) == 0
    assert "hf-hub:org/fine-tuned@" + "d" * 40 in capsys.readouterr().out
    (create, upload) = recorder.calls
    assert create == ("create_repo", {"repo_id": "org/fine-tuned", "private": True, "exist_ok": True})
    assert upload[1]["folder_path"] == str(folder) and upload[1]["repo_id"] == "org/fine-tuned"
    assert sorted(upload[1]["allow_patterns"]) == ["README.md", "config.json", "model.safetensors"]


def test_broken_checkpoint_is_never_pushed(tmp_path, monkeypatch):
    recorder = Recorder()
    recorder.install(monkeypatch)
    folder = zoo.save_pretrained(zoo.create_model("test-pair-potential"), tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        zoo.push_to_hub(folder, "org/x")
    folder = zoo.save_pretrained(zoo.create_model("test-pair-potential"), tmp_path / "other", card="# no front matter")
    with pytest.raises(CheckpointError, match="front matter"):
        zoo.push_to_hub(folder, "org/x")
    assert recorder.calls == []  # refused before any request
