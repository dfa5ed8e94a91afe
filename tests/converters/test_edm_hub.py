"""`zoo.load("edm-qm9")` through the loopback Hub: an official-format EDM checkpoint is downloaded, converted once,
cached and then loaded offline; tampered, truncated, HTML, missing and unconvertible downloads fail clearly.

The checkpoint is written here the way the official code writes its outputs (``torch.save`` of the
``EnVariationalDiffusion`` state dict as ``generative_model_ema.npy``, ``pickle.dump`` of the training
``argparse.Namespace`` as ``args.pickle``) with a small configuration. The card's source is pointed at the loopback
server; its ``converter_args.args`` are replaced by the arguments read back from that ``args.pickle`` (the card
carries them inline, so the card route downloads the state dict only).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pickle
from pathlib import Path

import pytest
import torch

import zoo
from zoo import registry
from zoo.converters import convert
from zoo.converters.edm import load_args, model_args_from_official
from zoo.hub import DownloadError, IntegrityError, converted_dir, sha256_file

OFFICIAL_ARGS = {  # main_qm9.py's argument names; no aggregation_method, as in the released args.pickle
    "exp_name": "edm_qm9_small",
    "model": "egnn_dynamics",
    "probabilistic_model": "diffusion",
    "diffusion_steps": 30,
    "diffusion_noise_schedule": "polynomial_2",
    "diffusion_noise_precision": 1e-05,
    "diffusion_loss_type": "l2",
    "n_layers": 2,
    "inv_sublayers": 1,
    "nf": 16,
    "tanh": True,
    "attention": True,
    "norm_constant": 1,
    "sin_embedding": False,
    "dataset": "qm9",
    "conditioning": [],
    "normalize_factors": [1, 4, 10],
    "remove_h": False,
    "include_charges": True,
    "normalization_factor": 1,
    "condition_time": True,
    "context_node_nf": 0,
}
FILENAME = "generative_model_ema.npy"


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """An official-format output folder: ``generative_model_ema.npy`` + ``args.pickle`` (random weights)."""
    folder = tmp_path_factory.mktemp("outputs") / "edm_qm9_small"
    folder.mkdir()
    torch.manual_seed(0)
    model = zoo.create_model("edm", **model_args_from_official({**OFFICIAL_ARGS, "aggregation_method": "sum"}))
    with torch.no_grad():  # weights of a trained model are not ~1e-3 in the coordinate head
        for name, param in model.named_parameters():
            if name.endswith("coord_mlp.4.weight"):
                param.normal_(0.0, 0.3)
    torch.save(model.state_dict(), folder / FILENAME)
    with open(folder / "args.pickle", "wb") as handle:
        pickle.dump(argparse.Namespace(**OFFICIAL_ARGS), handle)
    return folder


def _point_card_at(monkeypatch, url: str, args: dict, sha256: str | None = None) -> None:
    """Register a copy of the edm-qm9 card whose source is ``url`` and whose converter gets ``args``."""
    card = zoo.get_card("edm-qm9")
    source = card.spec.source.model_copy(update={"url": url, "sha256": sha256, "converter_args": {"args": args}})
    patched = dataclasses.replace(card, spec=card.spec.model_copy(update={"source": source}))
    cards, aliases = registry._load_cards()
    monkeypatch.setattr(registry, "_load_cards", lambda: ({**cards, card.name: patched}, aliases))


def _probe(model: torch.nn.Module) -> torch.Tensor:
    """The denoiser on a fixed noisy batch of two molecules (3 and 4 atoms)."""
    generator = torch.Generator().manual_seed(1)
    node_mask = (torch.arange(4)[None, :] < torch.tensor([3, 4])[:, None]).float()[..., None]
    z = torch.randn(2, 4, 3 + model.in_node_nf, generator=generator) * node_mask
    z[..., :3] -= z[..., :3].sum(1, keepdim=True) / node_mask.sum(1, keepdim=True) * node_mask
    with torch.no_grad():
        return model.phi(z, torch.tensor([0.3, 0.7]), node_mask)


def _gets(hub) -> int:
    return sum(1 for method, path in hub.requests if method == "GET" and path.startswith("/edm/"))


def test_load_converts_once_caches_and_works_offline(official, hub, cache, monkeypatch, caplog):
    args = load_args(official / "args.pickle")
    assert "aggregation_method" not in args  # the converter supplies 'sum', as eval_sample.py does
    url = hub.add_file(f"/edm/{FILENAME}", (official / FILENAME).read_bytes())
    _point_card_at(monkeypatch, url, args)
    expected = _probe(convert("edm", official / FILENAME))

    with caplog.at_level(logging.INFO):
        model = zoo.load("edm")  # the alias
    assert "edm -> edm-qm9" in caplog.text
    assert sha256_file(official / FILENAME) in caplog.text  # the unpinned sha256 is printed for the card
    assert torch.equal(_probe(model), expected)
    assert model.T == 30 and model.species == [1, 6, 7, 8, 9] and model.metadata["task"] == "generative"
    assert (converted_dir(zoo.get_card("edm-qm9")) / "model.safetensors").is_file()
    assert _gets(hub) == 1

    again = zoo.load("edm-qm9")  # converted checkpoint from the cache: no second download or conversion
    assert torch.equal(_probe(again), expected) and _gets(hub) == 1

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = zoo.load("edm-qm9")
    assert torch.equal(_probe(offline), expected)
    assert [len(a) for a in offline.sample(2, n_atoms=3, seed=0)] == [3, 3]


def test_pinned_sha256_refuses_tampered_download(official, hub, cache, monkeypatch):
    data = (official / FILENAME).read_bytes()
    url = hub.add_file(f"/edm/{FILENAME}", data)
    _point_card_at(monkeypatch, url, load_args(official / "args.pickle"), sha256=sha256_file(official / FILENAME))
    hub.set_fault(f"/edm/{FILENAME}", "tamper")
    with pytest.raises(IntegrityError, match="does not match the card"):
        zoo.load("edm-qm9")
    assert not (converted_dir(zoo.get_card("edm-qm9")) / "model.safetensors").exists()
    assert torch.equal(_probe(zoo.load("edm-qm9")), _probe(convert("edm", official / FILENAME)))  # retry works


@pytest.mark.parametrize(
    ("fault", "message"), [("truncate", "interrupted|stopped at"), ("html", "HTML page"), ("error500", "HTTP 500")]
)
def test_broken_downloads_are_refused_and_resumable(official, hub, cache, monkeypatch, fault, message):
    url = hub.add_file(f"/edm/{FILENAME}", (official / FILENAME).read_bytes())
    _point_card_at(monkeypatch, url, load_args(official / "args.pickle"))
    hub.set_fault(f"/edm/{FILENAME}", fault)
    with pytest.raises(DownloadError, match=message):
        zoo.load("edm-qm9")
    assert not (converted_dir(zoo.get_card("edm-qm9")) / "model.safetensors").exists()
    assert zoo.load("edm-qm9").T == 30


def test_missing_file_and_offline_without_cache(official, hub, cache, monkeypatch):
    _point_card_at(monkeypatch, hub.url(f"/edm/{FILENAME}"), load_args(official / "args.pickle"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        zoo.load("edm-qm9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not cached and downloads are off"):
        zoo.load("edm-qm9")


def test_corrupt_checkpoint_and_mismatched_args(official, hub, cache, monkeypatch, tmp_path):
    """A file that downloads fine but is not a loadable state dict, or does not fit the card's arguments."""
    truncated = (official / FILENAME).read_bytes()[:2000]
    _point_card_at(monkeypatch, hub.add_file(f"/edm/bad/{FILENAME}", truncated), load_args(official / "args.pickle"))
    with pytest.raises(RuntimeError, match=r"zip archive|central directory|failed finding"):
        zoo.load("edm-qm9")
    assert not (converted_dir(zoo.get_card("edm-qm9")) / "model.safetensors").exists()

    wrong = {**load_args(official / "args.pickle"), "nf": 32}
    _point_card_at(monkeypatch, hub.add_file(f"/edm/ok/{FILENAME}", (official / FILENAME).read_bytes()), wrong)
    monkeypatch.setattr(zoo.hub, "zoo_cache_dir", lambda cache_dir=None: tmp_path / "fresh-zoo-cache")
    with pytest.raises(RuntimeError, match="size mismatch"):
        zoo.load("edm-qm9")


def test_converter_needs_args_beside_the_state_dict(official, tmp_path):
    (tmp_path / FILENAME).write_bytes((official / FILENAME).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"args\.pickle"):
        convert("edm", tmp_path / FILENAME)
    assert convert("edm", official / FILENAME).T == 30
