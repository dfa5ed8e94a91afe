"""Loading through the real huggingface_hub client against the loopback Hub; offline; integrity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import zoo
from zoo.converters import _CONVERTERS, register_converter
from zoo.hub import DownloadError, IntegrityError, download_url, sha256_file
from zoo.testing import molecule_graph

WEIGHT_FILES = ("config.json", "model.safetensors")


def publish(tmp_path: Path, hub, repo_id: str = "org/tiny", seed: int = 0):
    torch.manual_seed(seed)
    model = zoo.create_model("test-pair-potential", num_basis=6, hidden=8).double().eval()
    folder = zoo.save_pretrained(model, tmp_path / f"publish-{seed}")
    commit = hub.add_repo(repo_id, folder)
    return model, folder, commit


def write_card(cards_dir: Path, name: str, source: dict, aliases: tuple[str, ...] = ()) -> None:
    spec = {"name": name, "aliases": list(aliases), "architecture": "test-pair-potential", "task": "potential"}
    front = {"license": "mit", "library_name": "zoo", "zoo": {**spec, "source": source}}
    (cards_dir / f"{name}.md").write_text(f"---\n{yaml.safe_dump(front, sort_keys=False)}---\nTest card.\n")


def hub_card(cards_dir, folder, commit, name="tiny-hub-model", aliases=("tiny",)):
    files = {f: sha256_file(folder / f) for f in WEIGHT_FILES}
    write_card(cards_dir, name, {"kind": "hub", "repo_id": "org/tiny", "revision": commit, "files": files}, aliases)


def cached_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and "blobs" in p.parts]


def test_publish_load_by_spec_and_card_then_offline(tmp_path, hub, cache, cards_dir, monkeypatch):
    model, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    graph = molecule_graph()
    expected = model(graph)

    by_spec = zoo.load(f"hf-hub:org/tiny@{commit}")
    by_card = zoo.load("tiny")  # alias -> card -> pinned revision + sha256
    for loaded in (by_spec, by_card):
        out = loaded(graph)
        assert torch.equal(out["energy"], expected["energy"])
        assert torch.equal(out["forces"], expected["forces"])
    assert by_card.card.name == "tiny-hub-model"

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline_spec = zoo.load(f"hf-hub:org/tiny@{commit}")
    offline_card = zoo.load("tiny-hub-model")
    assert torch.equal(offline_spec(graph)["energy"], expected["energy"])
    assert torch.equal(offline_card(graph)["forces"], expected["forces"])


def test_cached_pinned_revision_makes_no_request(tmp_path, hub, cache, cards_dir):
    _, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    zoo.load("tiny")
    before = len(hub.requests)
    zoo.load("tiny")
    assert len(hub.requests) == before


def test_tampered_file_is_refused_and_deleted(tmp_path, hub, cache, cards_dir):
    _, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    hub.set_fault("model.safetensors", "tamper")
    with pytest.raises(IntegrityError) as info:
        zoo.load("tiny")
    expected = sha256_file(folder / "model.safetensors")
    assert expected in str(info.value) and "does not match" in str(info.value)
    assert not any(p.name == expected for p in cached_blobs(cache))
    assert not list(cache.rglob("snapshots/*/model.safetensors"))
    zoo.load("tiny")  # the next, clean download works


def test_tampered_lfs_file_refused_without_card(tmp_path, hub, cache):
    _, _, commit = publish(tmp_path, hub)
    hub.set_fault("model.safetensors", "tamper")
    with pytest.raises(IntegrityError, match="does not match"):
        zoo.load(f"hf-hub:org/tiny@{commit}")


def test_truncated_download_leaves_nothing(tmp_path, hub, cache, cards_dir, monkeypatch):
    _, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    hub.set_fault("model.safetensors", "truncate", times=20)  # huggingface_hub retries a broken transfer
    with pytest.raises((DownloadError, IntegrityError)):
        zoo.load("tiny")
    assert not list(cache.rglob("snapshots/*/model.safetensors"))
    assert not [p for p in cached_blobs(cache) if p.stat().st_size and p.name == sha256_file(folder / WEIGHT_FILES[1])]
    assert not list(cache.rglob("*.incomplete"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the local cache"):
        zoo.load("tiny")


def test_wrong_revision_and_missing_repo(tmp_path, hub, cache):
    publish(tmp_path, hub)
    with pytest.raises(DownloadError, match=r"revision 'f{40}' does not exist in org/tiny"):
        zoo.load("hf-hub:org/tiny@" + "f" * 40)
    with pytest.raises(DownloadError, match="repository 'org/nothing' not found"):
        zoo.load("hf-hub:org/nothing")
    with pytest.raises(ValueError, match="hf-hub:org/name"):
        zoo.load("hf-hub:just-a-name")


def test_card_revision_override_is_explicit(tmp_path, hub, cache, cards_dir):
    _, folder, commit = publish(tmp_path, hub)
    hub_card(cards_dir, folder, commit)
    with pytest.raises(ValueError, match="this card pins org/tiny"):
        zoo.load("tiny", revision="main")


def test_offline_uncached_is_clear(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="downloads are off"):
        zoo.load("hf-hub:org/tiny@" + "a" * 40)


def test_gated_repo_says_how_to_get_access(tmp_path, hub, cache, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.utils._auth.get_token", lambda: None, raising=False)
    folder = zoo.save_pretrained(zoo.create_model("test-pair-potential"), tmp_path / "g")
    hub.add_repo("org/gated", folder, gated=True)
    with pytest.raises(DownloadError, match="HF_TOKEN"):
        zoo.load("hf-hub:org/gated", token=False)


# ------------------------------------------------------------------------------------- upstream + converter
@pytest.fixture
def npz_converter():
    """A converter from a plain .npz of named arrays (stand-in for an upstream format)."""

    @register_converter("test-npz")
    def convert(path: Path, **model_args):
        arrays = np.load(path)
        model = zoo.create_model("test-pair-potential", **model_args)
        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files}, strict=True)
        return model

    yield convert
    del _CONVERTERS["test-npz"]


def npz_bytes(tmp_path: Path) -> tuple[bytes, torch.nn.Module]:
    torch.manual_seed(3)
    model = zoo.create_model("test-pair-potential", num_basis=5)
    np.savez(tmp_path / "up.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    return (tmp_path / "up.npz").read_bytes(), model


def url_card(cards_dir, url, sha=None):
    source = {"kind": "url", "url": url, "filename": "up.npz", "sha256": sha, "converter": "test-npz"}
    write_card(cards_dir, "upstream-model", {**source, "converter_args": {"num_basis": 5}})


def test_url_source_converts_once_then_offline(tmp_path, hub, cache, cards_dir, npz_converter, monkeypatch, caplog):
    data, reference = npz_bytes(tmp_path)
    reference.eval()
    url = hub.add_file("/files/up.npz", data)
    url_card(cards_dir, url)
    graph = molecule_graph(dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="zoo.hub"):
        first = zoo.load("upstream-model")
    assert sha256_file(tmp_path / "up.npz") in caplog.text  # unpinned sha256 is printed on first use
    assert torch.equal(first(graph)["energy"], reference(graph)["energy"])
    gets = [r for r in hub.requests if r == ("GET", "/files/up.npz")]
    assert len(gets) == 1
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = zoo.load("upstream-model")
    assert torch.equal(again(graph)["forces"], reference(graph)["forces"])
    assert (cache / "zoo" / "converted" / "upstream-model" / "source.json").is_file()


def test_url_sha_mismatch_and_html_refused(tmp_path, hub, cache, cards_dir, npz_converter):
    data, _ = npz_bytes(tmp_path)
    url = hub.add_file("/files/up.npz", data)
    url_card(cards_dir, url, sha="0" * 64)
    with pytest.raises(IntegrityError, match="does not match the card's 0000"):
        zoo.load("upstream-model")
    assert not list((cache / "zoo").rglob("up.npz*"))
    hub.set_fault("/files/up.npz", "html")
    with pytest.raises(DownloadError, match="HTML page"):
        download_url(url, tmp_path / "dl" / "up.npz")
    assert not (tmp_path / "dl" / "up.npz").exists()


def test_url_download_resumes_after_truncation(tmp_path, hub):
    data = bytes(range(256)) * 4096
    url = hub.add_file("/big.bin", data)
    hub.set_fault("/big.bin", "truncate")
    target = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        download_url(url, target)
    assert not target.exists()
    partial = target.with_name("big.bin.part").stat().st_size
    assert 0 < partial < len(data)
    download_url(url, target, sha256=__import__("hashlib").sha256(data).hexdigest())
    assert target.read_bytes() == data
    assert not target.with_name("big.bin.part").exists()


def test_existing_download_is_checked_against_the_sha256(tmp_path, hub):
    data = b"upstream checkpoint bytes"
    url = hub.add_file("/ckpt.bin", data)
    target = tmp_path / "ckpt.bin"
    digest = __import__("hashlib").sha256(data).hexdigest()
    download_url(url, target, sha256=digest)
    assert download_url(url, target, sha256=digest) == target  # present and matching: no request, kept
    target.write_bytes(b"stale file from an older card")
    with pytest.raises(DownloadError, match=r"does not match the expected sha256 .*delete it"):
        download_url(url, target, sha256=digest)
    assert download_url(url, target) == target  # without a pin an existing file is taken as it is


def test_zoo_offline_turns_downloads_off(hub, cache, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="downloads are off"):
        zoo.load("hf-hub:org/tiny@" + "a" * 40)


def test_url_http_error(tmp_path, hub):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_url(hub.url("/missing.bin"), tmp_path / "m.bin")


def test_unknown_converter_suggests():
    from zoo.converters import get_converter

    with pytest.raises(KeyError, match="no converter named 'no_such_format'"):
        get_converter("no_such_format")


def test_prefilled_cache_offline_without_server(tmp_path, cache, monkeypatch):
    """An air-gapped cluster: a cache filled by hand (or copied from a login node) serves loads offline."""
    torch.manual_seed(5)
    model = zoo.create_model("test-pair-potential", hidden=4).double().eval()
    folder = zoo.save_pretrained(model, tmp_path / "ckpt")
    commit = "c" * 40
    snapshot = cache / "hub" / "models--org--prefilled" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in (*WEIGHT_FILES, "README.md"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    (cache / "hub" / "models--org--prefilled" / "refs").mkdir()
    (cache / "hub" / "models--org--prefilled" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    graph = molecule_graph()
    for spec in ("hf-hub:org/prefilled", f"hf-hub:org/prefilled@{commit}"):
        assert torch.equal(zoo.load(spec)(graph)["energy"], model(graph)["energy"])
