"""Official Equiformer (v1) OC20 checkpoints -> zoo: golden parity, key handling, errors, and `zoo.load` end to end.

The fixtures (scripts/golden/make_equiformer_v1_golden.py, official code with e3nn 0.4.4) hold reduced-size
IS2RE models (6-block style; 18-block style with the auxiliary IS2RS head) with their official state dicts,
e3nn internals included, and float64 outputs for two rattled Cu(111)+O slabs. The tests write checkpoints in
the official trainer's format from them (``{"state_dict" with DDP prefixes, "normalizers", "config", ...}``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile
from pathlib import Path

import pytest
import torch
from golden import load_golden, relative, section

import zoo
from zoo import registry
from zoo.converters import convert, get_converter
from zoo.converters.equiformer_v1 import ConversionError, convert_state_dict, load_checkpoint
from zoo.graph import AtomsGraph, batch_graphs
from zoo.hub import sha256_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "equiformer_v1"
PARITY = 1e-6  # max |zoo - official| / max |official|, float64
TARGET_MEAN, TARGET_STD = -1.525913953781128, 2.279365062713623  # oc20/configs/is2re/all/base.yml
POSITIONS_STD = 0.8771552443504333  # the 18-block configuration's position normaliser
CASES = ["is2re", "is2re_aux"]


def official_checkpoint(case: str, prefix: str = "module.module.") -> dict:
    """A checkpoint as the official OC20 trainer saves it (``save(..., training_state=True)``)."""
    tensors, config = load_golden(FIXTURES / f"{case}.safetensors")
    config = {k: v for k, v in config.items() if k != "kind"}
    model = {
        "name": "graph_attention_transformer",
        "irreps_node_attr": "1x0e",
        "use_node_attr": False,
        "use_atom_edge_attr": False,
        "irreps_atom_edge_attr": "1x0e",
        "rescale_degree": False,
        "norm_layer": "layer",
        "alpha_drop": 0.2,
        "proj_drop": 0.0,
        "out_drop": 0.0,
        "otf_graph": True,
        "use_pbc": True,
        "max_neighbors": 500,
        **config,
    }
    normalizers = {"target": {"mean": torch.tensor(TARGET_MEAN), "std": torch.tensor(TARGET_STD)}}
    if config.get("use_auxiliary_task"):
        normalizers["positions"] = {"mean": torch.zeros(3), "std": torch.full((3,), POSITIONS_STD)}
    state = {prefix + key: value for key, value in section(tensors, "state_dict").items()}
    return {
        "epoch": 2,
        "step": 4000,
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]},
        "scheduler": None,
        "normalizers": normalizers,
        "config": {"trainer": "energy_v2", "model": model, "optim": {"batch_size": 16, "lr_initial": 2e-4}},
        "val_metrics": {"energy_mae": {"metric": 0.51, "total": 10.2, "numel": 20}},
        "ema": None,
        "amp": None,
    }


def write_checkpoint(path: Path, case: str, **kwargs) -> Path:
    torch.save(official_checkpoint(case, **kwargs), path)
    return path


def golden_slabs(tensors: dict[str, torch.Tensor]) -> AtomsGraph:
    """The fixture's two slabs with the official edges and cell offsets."""
    graphs = []
    for index in range(int(tensors["batch"].max()) + 1):
        atoms = tensors["batch"] == index
        first = int(torch.nonzero(atoms)[0, 0])
        edges = atoms[tensors["edge_index"][1]]
        graphs.append(
            AtomsGraph.build(
                tensors["pos"][atoms],
                tensors["z"][atoms],
                cell=tensors["cell"][index],
                pbc=torch.tensor([True, True, False]),
                tags=tensors["tags"][atoms],
                edge_index=tensors["edge_index"][:, edges] - first,
                edge_shift=tensors["edge_shift"][edges],
            )
        )
    return batch_graphs(graphs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("equiformer_v1")
    return {case: write_checkpoint(folder / f"{case}.pt", case) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_parity_with_official_code(checkpoints, case):
    tensors, _ = load_golden(FIXTURES / f"{case}.safetensors")
    model = convert("equiformer_v1", checkpoints[case]).double()
    out = model(golden_slabs(tensors))
    assert relative(out["relaxed_energy"], tensors["relaxed_energy"] * TARGET_STD + TARGET_MEAN) <= PARITY
    if case == "is2re_aux":
        assert relative(out["relaxed_displacement"], tensors["relaxed_displacement"] * POSITIONS_STD) <= PARITY
        assert model.displacement_std == pytest.approx(POSITIONS_STD)
    else:
        assert "relaxed_displacement" not in out
    assert model.metadata["source"] == {"format": "equiformer_v1", "weights": "state_dict"}
    assert model.metadata["cutoff"] == 5.0 and model.metadata["max_neighbors"] == 500


def test_learnable_weights_map_one_to_one(checkpoints):
    """Every zoo parameter is the official tensor of the same name (``.tp.weight`` -> ``.weight``, bias lists)."""
    state = load_checkpoint(checkpoints["is2re_aux"])["state_dict"]
    state = {key.removeprefix("module.module."): value for key, value in state.items()}
    model = convert("equiformer_v1", checkpoints["is2re_aux"])
    for name, param in model.named_parameters():
        official = name.replace(".ffn.gate.", ".ffn.fctp_1.gate.")
        if official.endswith(".weight") and official.removesuffix(".weight") + ".tp.weight" in state:
            official = official.removesuffix(".weight") + ".tp.weight"
        elif official.endswith(".bias") and official + ".0" in state:
            official += ".0"
        assert torch.equal(param.detach(), state[official]), name
    dropped = [k for k in state if "output_mask" in k or "_compiled_main" in k or state[k].numel() == 0]
    assert len(dropped) > 50 and len(state) - len(dropped) == len(model.state_dict())


@pytest.mark.parametrize("prefix", ["", "module.", "module.module."])
def test_any_wrapper_prefix_and_passthrough(prefix):
    model = zoo.create_model("equiformer_v1-oc20-is2re", **_config("is2re"))
    converted = convert_state_dict(official_checkpoint("is2re", prefix=prefix)["state_dict"], model)
    assert converted.keys() == model.state_dict().keys()
    assert convert_state_dict(converted, model).keys() == converted.keys()  # already converted: unchanged


def _config(case: str) -> dict:
    _, config = load_golden(FIXTURES / f"{case}.safetensors")
    return {k: v for k, v in config.items() if k not in ("kind", "use_auxiliary_task")}


def test_zip_of_run_directory_and_config_argument(tmp_path, checkpoints):
    archive = tmp_path / "run.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("l1_all/log.txt", "epoch 20")
        handle.write(checkpoints["is2re"], "l1_all/best_checkpoint.pt")
    direct = convert("equiformer_v1", checkpoints["is2re"])
    from_zip = convert("equiformer_v1", archive)
    pairs = zip(direct.state_dict().values(), from_zip.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ConversionError, match="weights_only"):
        convert("equiformer_v1", archive, checkpoint_name="checkpoint.pt")  # not in the archive: not a checkpoint
    bare = official_checkpoint("is2re")
    model_block = bare.pop("config")["model"]
    torch.save(bare, tmp_path / "bare.pt")
    with pytest.raises(ConversionError, match="config"):
        convert("equiformer_v1", tmp_path / "bare.pt")
    converted = convert("equiformer_v1", tmp_path / "bare.pt", config=model_block)
    assert torch.equal(converted.head[0].weight, direct.head[0].weight)


def test_unsupported_and_broken_checkpoints(tmp_path):
    checkpoint = official_checkpoint("is2re")
    for attribute, value in [("use_attention_head", True), ("use_node_attr", True), ("norm_layer", "graph")]:
        bad = dict(checkpoint, config={"model": {**checkpoint["config"]["model"], attribute: value}})
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ConversionError, match=attribute):
            convert("equiformer_v1", tmp_path / "bad.pt")
    other = dict(checkpoint, config={"model": {"name": "dot_product_attention_transformer"}})
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match="dot_product_attention_transformer"):
        convert("equiformer_v1", tmp_path / "other.pt")
    extra = dict(checkpoint, state_dict={**checkpoint["state_dict"], "module.module.unknown.weight": torch.ones(2)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ConversionError, match=r"unknown\.weight"):
        convert("equiformer_v1", tmp_path / "extra.pt")
    missing = dict(checkpoint, state_dict={k: v for k, v in checkpoint["state_dict"].items() if "head.2" not in k})
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match=r"head\.2\.weight"):
        convert("equiformer_v1", tmp_path / "missing.pt")
    data = io.BytesIO()
    torch.save(checkpoint, data)
    (tmp_path / "truncated.pt").write_bytes(data.getvalue()[:2000])
    with pytest.raises(ConversionError, match="weights_only"):
        convert("equiformer_v1", tmp_path / "truncated.pt")


def test_pickle_with_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code when unpickled is refused, not executed."""

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"state_dict": {}, "config": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ConversionError, match="weights_only"):
        convert("equiformer_v1", tmp_path / "evil.pt")


def test_registered_lazily():
    assert get_converter("equiformer_v1").__name__ == "convert_equiformer_v1"


def test_load_alias_converts_once_caches_and_works_offline(hub, cache, monkeypatch, caplog, tmp_path, checkpoints):
    """`zoo.load("equiformer-v1-oc20-is2re")`: alias -> card -> URL (loopback, the run directory's zip as
    Dropbox serves it) -> equiformer_v1 converter -> cache -> offline."""
    archive = tmp_path / "folder.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("events.out.tfevents", b"\x00" * 64)
        handle.write(checkpoints["is2re"], "best_checkpoint.pt")
    card = zoo.get_card("equiformer-v1-oc20-is2re")
    url = hub.add_file(f"/models/{card.spec.source.filename}", archive.read_bytes())
    source = card.spec.source.model_copy(update={"url": url})
    patched = dataclasses.replace(card, spec=card.spec.model_copy(update={"source": source}))
    cards, aliases = registry._load_cards()
    monkeypatch.setattr(registry, "_load_cards", lambda: ({**cards, card.name: patched}, aliases))

    tensors, _ = load_golden(FIXTURES / "is2re.safetensors")
    graph = golden_slabs({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    expected = convert("equiformer_v1", checkpoints["is2re"])(graph)["relaxed_energy"]
    with caplog.at_level(logging.INFO):
        model = zoo.load("equiformer-v1-oc20-is2re")
    assert "equiformer-v1-oc20-is2re -> equiformer-v1-oc20-is2re-6l" in caplog.text
    assert sha256_file(archive) in caplog.text  # the unpinned sha256 is printed for the card
    assert torch.equal(model(graph)["relaxed_energy"], expected)
    assert sum(1 for r in hub.requests if r[0] == "GET" and r[1].startswith("/models/")) == 1

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = zoo.load("equiformer-v1-oc20-is2re")
    assert torch.equal(again(graph)["relaxed_energy"], expected)
