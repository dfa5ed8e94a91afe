"""Equiformer (v1): parameter counts, golden parity with the official code, equivariance, conservative forces.

The fixtures come from scripts/golden/make_equiformer_v1_golden.py (the official code with e3nn 0.4.4 in its
own venv): reduced-size copies of the QM9, QM9-with-linear-messages/Bessel/E(3) and MD17 (lmax 3)
configurations, their official state dicts and float64 outputs. The OC20 cases are in
tests/converters/test_equiformer_v1_converter.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden import load_golden, relative, section

import zoo
from zoo.converters.equiformer_v1 import convert_state_dict
from zoo.graph import AtomsGraph, GraphError, batch_graphs, radius_graph
from zoo.models.equiformer_v1 import coupling_e3nn_04
from zoo.testing import assert_equivariant, molecule_graph

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "equiformer_v1"
PARITY = 1e-6  # max |zoo - official| / max |official|, float64
TINY = dict(
    irreps_node_embedding="8x0e+4x1e+2x2e",
    num_layers=2,
    irreps_sh="1x0e+1x1e+1x2e",
    number_of_basis=8,
    fc_neurons=[8],
    irreps_feature="12x0e",
    irreps_head="4x0e+2x1e+2x2e",
    num_heads=2,
    irreps_mlp_mid="8x0e+4x1e+2x2e",
)
E3 = dict(
    TINY,
    irreps_node_embedding="8x0e+2x0o+4x1e+4x1o+2x2e+2x2o",
    irreps_sh="1x0e+1x1o+1x2e",
    irreps_head="4x0e+2x0o+2x1e+2x1o+2x2e+2x2o",
    irreps_mlp_mid="8x0e+2x0o+2x1e+2x1o+2x2e+2x2o",
)
SCALAR = {"y": "scalar"}
OFFICIAL_COUNTS = {  # sum(p.numel()) of the official models, measured with the official code (e3nn 0.4.4)
    "equiformer_v1-qm9": 3_531_715,
    "equiformer_v1-qm9-bessel": 3_477_705,
    "equiformer_v1-md17-l2": 3_496_001,
    "equiformer_v1-md17-l3": 5_500_865,
    "equiformer_v1-oc20-is2re": 9_123_331,
    "equiformer_v1-oc20-is2re-18l": 26_773_379,
}


@pytest.mark.parametrize(("name", "count"), OFFICIAL_COUNTS.items())
def test_official_parameter_counts(name, count):
    assert sum(p.numel() for p in zoo.create_model(name).parameters()) == count


def _golden_model(case: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The zoo model of a fixture with the official weights (converted), float64, eval mode."""
    tensors, config = load_golden(FIXTURES / f"{case}.safetensors")
    config = dict(config)
    kind = config.pop("kind")
    model = zoo.create_model("equiformer_v1-md17-l2" if kind == "md17" else "equiformer_v1", **config)
    model.load_state_dict(convert_state_dict(section(tensors, "state_dict"), model), strict=True)
    return model.double().eval(), tensors


def _golden_molecules(tensors: dict[str, torch.Tensor]) -> AtomsGraph:
    """The fixture's molecules with the official code's edges."""
    graphs = []
    for index in range(int(tensors["batch"].max()) + 1):
        atoms = tensors["batch"] == index
        first = int(torch.nonzero(atoms)[0, 0])
        edges = atoms[tensors["edge_index"][1]]
        graphs.append(
            AtomsGraph.build(
                tensors["pos"][atoms],
                tensors["z"][atoms],
                edge_index=tensors["edge_index"][:, edges] - first,
                edge_shift=torch.zeros(int(edges.sum()), 3, dtype=torch.long),
            )
        )
    return batch_graphs(graphs)


@pytest.mark.parametrize("case", ["qm9", "qm9_e3_linear_bessel"])
def test_qm9_parity_with_official_code(case):
    model, tensors = _golden_model(case)
    out = model(_golden_molecules(tensors))
    assert relative(out["y"], tensors["y"]) <= PARITY


def test_md17_parity_with_official_code():
    model, tensors = _golden_model("md17_l3")
    out = model(_golden_molecules(tensors))
    assert relative(out["energy"], tensors["energy"]) <= PARITY
    assert relative(out["forces"], tensors["forces"]) <= PARITY


def test_neighbour_list_gives_the_official_edges():
    """zoo's radius graph at the model's cutoff finds the same edges (in another order): same outputs."""
    model, tensors = _golden_model("qm9")
    graph = radius_graph(_golden_molecules(tensors), model.metadata["cutoff"])
    assert graph.edge_index.shape == tensors["edge_index"].shape
    assert relative(model(graph)["y"], tensors["y"]) <= PARITY


def test_e3nn_04_coupling_signs():
    """The 1-2-2 coupling is antisymmetric in its two l=2 slots and e3nn 0.4 and >= 0.5 differ in its sign."""
    from e3nn import o3

    assert torch.allclose(coupling_e3nn_04(1, 2, 2), -o3.wigner_3j(1, 2, 2, dtype=torch.float64))
    assert torch.allclose(coupling_e3nn_04(1, 1, 2), o3.wigner_3j(1, 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="above 8"):
        coupling_e3nn_04(9, 1, 9)


def test_se3_model_is_rotation_equivariant_not_reflection():
    torch.manual_seed(0)
    model = zoo.create_model("equiformer_v1", **TINY).eval()  # eval: no attention dropout
    graph = molecule_graph(elements=(1, 6, 7, 8, 9))
    assert_equivariant(model, graph, output_types=SCALAR, parity=False)
    report = assert_equivariant(model, graph, output_types=SCALAR, raise_on_failure=False)
    reflected = next(r for r in report.rows if r.transform == "reflection")
    assert reflected.max_abs_error > 1e-6  # 1e vectors and 1x1e harmonics: chirality-sensitive, as upstream


def test_e3_model_is_fully_equivariant():
    torch.manual_seed(0)
    model = zoo.create_model("equiformer_v1", **E3, nonlinear_message=False, basis_type="bessel").eval()
    assert model.metadata["parity"] == "E(3)"
    assert_equivariant(model, molecule_graph(elements=(1, 6, 7, 8, 9)), output_types=SCALAR)


def test_potential_forces_are_minus_energy_gradient_and_equivariant():
    torch.manual_seed(0)
    args = dict(TINY, irreps_node_embedding="8x0e+4x1e+2x2e+2x3e", irreps_sh="1x0e+1x1e+1x2e+1x3e")
    model = zoo.create_model("equiformer_v1-md17-l2", **args, target_mean=-3.0, target_std=2.0).double()
    graph = molecule_graph(num_atoms=6, elements=(1, 6, 8))
    out = model(graph)
    assert out["energies"].sum().item() == pytest.approx(out["energy"].item(), rel=1e-12)
    step = 1e-5
    for atom, axis in [(0, 0), (3, 2), (5, 1)]:
        moved = [graph.clone(), graph.clone()]
        moved[0].pos[atom, axis] += step
        moved[1].pos[atom, axis] -= step
        derivative = (model(moved[0])["energy"] - model(moved[1])["energy"]).item() / (2 * step)
        assert out["forces"][atom, axis].item() == pytest.approx(-derivative, abs=1e-7)
    assert_equivariant(model, graph, parity=False)
    assert model.metadata["force_mode"] == "conservative" and model.metadata["units"]["energy"] == "kcal/mol"


def test_normaliser_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = zoo.create_model("equiformer_v1", **TINY, drop_path_rate=0.5).double().eval()
    scaled = zoo.create_model("equiformer_v1", **TINY, target_mean=1.5, target_std=3.0).double().eval()
    scaled.load_state_dict(model.state_dict())
    graph = molecule_graph(elements=(1, 6, 8))
    raw = model(graph)["y"]
    assert torch.allclose(scaled(graph)["y"], raw * 3.0 + 1.5)
    assert torch.equal(model(graph)["y"], raw)  # eval: deterministic
    model.train()
    assert not torch.equal(model(graph)["y"], raw)  # attention dropout and drop path


def test_input_errors():
    torch.manual_seed(0)
    model = zoo.create_model("equiformer_v1", **TINY).double()
    graph = molecule_graph(elements=(1, 6, 8))
    with pytest.raises(GraphError, match="edge_index"):
        model(AtomsGraph.build(graph.pos, graph.z))
    with pytest.raises(GraphError, match="float32"):
        model(molecule_graph(dtype=torch.float32))
    sulphur = graph.clone()
    sulphur.z[0] = 16
    with pytest.raises(GraphError, match=r"\[16\]"):
        model(sulphur)
    oc20 = zoo.create_model("equiformer_v1-oc20-is2re", **{k: v for k, v in TINY.items() if "sh" not in k})
    untagged = graph.clone()
    del untagged.tags
    with pytest.raises(GraphError, match="tags"):
        oc20.double()(untagged)
    with pytest.raises(ValueError, match="irreps_node_embedding"):
        zoo.create_model("equiformer_v1", irreps_node_embedding="8x0e+4y1e")
    with pytest.raises(ValueError, match="basis_type"):
        zoo.create_model("equiformer_v1", **TINY, basis_type="chebyshev")


def test_isolated_atom_and_save_reload(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("equiformer_v1", **TINY).double().eval()
    lonely = radius_graph(
        AtomsGraph.build(torch.tensor([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]], dtype=torch.float64), [6, 8]), 5.0
    )
    assert lonely.edge_index.shape[1] == 0 and torch.isfinite(model(lonely)["y"]).all()
    folder = zoo.save_pretrained(model, tmp_path / "checkpoint")
    reloaded = zoo.load(str(folder)).double()
    graph = molecule_graph(elements=(1, 6, 8))
    assert torch.equal(reloaded(graph)["y"], model(graph)["y"])
