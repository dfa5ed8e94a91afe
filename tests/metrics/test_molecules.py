"""Molecule metrics on hand-made molecules: EDM bond table, stability, RDKit validity, uniqueness, novelty,
connectivity."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.build import molecule

from zoo.metrics import molecules as metrics

pytest.importorskip("rdkit")


def broken_methane() -> ase.Atoms:
    """CH4 with one hydrogen pulled 3 Å away: an unstable carbon, a lone H, two fragments."""
    atoms = molecule("CH4")
    atoms.positions[1] *= 4.0
    return atoms


def pentavalent_carbon() -> ase.Atoms:
    """A carbon with five hydrogens at 1.05 Å: over-bonded, RDKit refuses it."""
    directions = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    return ase.Atoms("CH5", positions=np.vstack([np.zeros(3), 1.05 * directions]))


@pytest.mark.parametrize(
    ("pair", "distance", "order"),
    [(("C", "C"), 1.20, 3), (("C", "C"), 1.30, 2), (("C", "C"), 1.50, 1), (("C", "C"), 1.70, 0),
     (("C", "H"), 1.09, 1), (("H", "C"), 1.25, 0), (("S", "C"), 1.60, 2), (("H", "Xe"), 1.0, 0)],
)  # fmt: skip
def test_edm_bond_order_thresholds(pair: tuple[str, str], distance: float, order: int) -> None:
    assert metrics.edm_bond_order(*pair, distance) == order
    assert metrics.edm_bond_order(*reversed(pair), distance) == order


def test_stability_of_hand_made_molecules() -> None:
    assert metrics.atom_stability(molecule("CH4")).all()
    assert metrics.atom_stability(molecule("H2O")).all()
    assert metrics.atom_stability(molecule("HCN")).all()  # a triple bond
    assert metrics.atom_stability(broken_methane()).tolist() == [False, False, True, True, True]
    result = metrics.stability([molecule("CH4"), molecule("H2O"), broken_methane(), pentavalent_carbon()])
    assert result["molecule_stability"] == pytest.approx(2 / 4)
    assert result["atom_stability"] == pytest.approx((5 + 3 + 3 + 5) / 19)  # the five H of CH5 are fine
    assert result["bond_inference"] == "edm-table"
    with pytest.raises(ValueError, match="no molecules"):
        metrics.stability([])


@pytest.mark.parametrize("method", ["edm-table", "rdkit"])
def test_validity_uniqueness_novelty_connectivity(method: str) -> None:
    import rdkit

    molecules = [molecule("CH4"), molecule("CH4"), molecule("H2O"), broken_methane(), pentavalent_carbon()]
    valid = metrics.validity(molecules, method)
    assert valid["bond_inference"] == method and valid["rdkit_version"] == rdkit.__version__
    assert valid["validity"] == pytest.approx(4 / 5)  # the broken methane keeps its largest fragment
    # the broken methane keeps its largest fragment: CH3 with implicit H (table) or the anion RDKit assigns
    broken = "C" if method == "edm-table" else "[CH3-]"
    assert sorted(valid["smiles"]) == sorted(["C", "C", "O", broken])
    unique = len({"C", "O", broken})
    assert metrics.uniqueness(valid["smiles"]) == pytest.approx(unique / 4)
    assert metrics.novelty(valid["smiles"], ["[H]C([H])([H])[H]", "not a smiles"]) == pytest.approx(
        (unique - 1) / unique
    )
    connected = metrics.connectivity(molecules, method)
    assert connected["connectivity"] == pytest.approx(4 / 5) and connected["bond_inference"] == method


def test_molecule_metrics_summary() -> None:
    result = metrics.molecule_metrics([molecule("CH4"), molecule("H2O"), broken_methane()], training_smiles=["O"])
    assert result["molecule_stability"] == pytest.approx(2 / 3)
    assert result["validity"] == 1.0 and result["uniqueness"] == pytest.approx(2 / 3)
    assert result["novelty"] == pytest.approx(1 / 2) and result["connectivity"] == pytest.approx(2 / 3)
    assert result["stability_bond_inference"] == "edm-table" and result["bond_inference"] == "edm-table"
    assert metrics.molecule_metrics([molecule("CH4")])["novelty"] is None
    with pytest.raises(ValueError, match="bond_inference"):
        metrics.to_rdkit(molecule("CH4"), "guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bond_inference"):
        metrics.connectivity([molecule("CH4")], "guess")  # type: ignore[arg-type]
