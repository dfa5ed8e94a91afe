"""QM9 (PyG raw layout, splits, pre-transform guard), MD17/rMD17/MD22 npz, SDF/MOL2 with bonds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from zoo.datasets.base import DatasetError, FrameError
from zoo.datasets.md17 import KCAL_PER_MOL, MDTrajectoryDataset, read_index_file
from zoo.datasets.molecules import MoleculeFileDataset
from zoo.datasets.processed import MissingRawFilesError
from zoo.datasets.qm9 import QM9, QM9_TARGETS, cormorant_split, random_split
from zoo.datasets.transforms import RadiusGraph

SMILES = ["C", "N", "O", "C#C", "C=O", "CCO"]
CSV_HEADER = "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,h298_atom,g298_atom"


def embedded(smiles: str, seed: int) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


def write_qm9_raw(raw: Path, skip: tuple[int, ...] = (2,)) -> np.ndarray:
    """gdb9.sdf, gdb9.sdf.csv and uncharacterized.txt as DeepChem/figshare ship them; returns the csv values."""
    raw.mkdir(parents=True)
    writer = Chem.SDWriter(str(raw / "gdb9.sdf"))
    for index, smiles in enumerate(SMILES):
        mol = embedded(smiles, index)
        mol.SetProp("_Name", f"gdb_{index + 1}")
        writer.write(mol)
    writer.close()
    values = np.round(np.random.default_rng(0).normal(size=(len(SMILES), 19)), 6)
    rows = [CSV_HEADER] + [f"gdb_{i + 1}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(values)]
    (raw / "gdb9.sdf.csv").write_text("\n".join(rows) + "\n")
    header = [" Uncharacterized molecules", " (B3LYP/6-31G(2df,p) geometry consistency check failed)", ""] + [""] * 4
    header += ["   Index   SMILES (GDB-17)       SMILES (B3LYP)", " " + "=" * 50]
    lines = header + [f"   {index + 1:6d}   X    Y    1.0" for index in skip] + [" " + "=" * 50]
    (raw / "uncharacterized.txt").write_text("\n".join(lines) + "\n")
    return values


def test_qm9_raw_layout(tmp_path: Path) -> None:
    values = write_qm9_raw(tmp_path / "raw")
    dataset = QM9(tmp_path)
    assert len(dataset) == len(SMILES) - 1
    kept = [0, 1, 3, 4, 5]
    factors = np.array([factor for _, _, factor in QM9_TARGETS])
    for position, index in enumerate(kept):
        graph = dataset[position]
        mol = embedded(SMILES[index], index)
        np.testing.assert_allclose(graph.pos.numpy(), mol.GetConformer().GetPositions(), atol=1e-4)  # SDF: 4 decimals
        assert graph.z.tolist() == [atom.GetAtomicNum() for atom in mol.GetAtoms()]
        expected = np.concatenate([values[index, 3:], values[index, :3]]) * factors
        np.testing.assert_array_equal(graph.y[0].numpy(), expected)
        assert graph.idx.tolist() == [index] and graph.name == f"gdb_{index + 1}"
        assert graph.bond_index.shape[1] == 2 * mol.GetNumBonds()
    assert dataset[3].bond_type.tolist() == [1, 1, 0, 0, 0, 0]  # C=O, then the two C-H
    assert QM9_TARGETS[QM9.target_index("homo")][1] == "eV"
    assert dataset.num_atoms().tolist() == [embedded(SMILES[i], i).GetNumAtoms() for i in kept]


def test_qm9_pre_transform_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_qm9_raw(tmp_path / "raw")
    calls = []
    original = QM9.process_raw
    monkeypatch.setattr(QM9, "process_raw", lambda self: calls.append(1) or original(self))
    QM9(tmp_path)
    QM9(tmp_path)
    assert len(calls) == 1, "processed data was not reused"
    with_edges = QM9(tmp_path, pre_transform=RadiusGraph(cutoff=2.0))
    assert len(calls) == 2, "a new pre_transform must trigger processing"
    assert "edge_index" in with_edges[0]
    QM9(tmp_path, pre_transform=RadiusGraph(cutoff=2.0))
    assert len(calls) == 2
    QM9(tmp_path, pre_transform=RadiusGraph(cutoff=2.5))
    assert len(calls) == 3


def test_qm9_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(MissingRawFilesError) as error:
        QM9(tmp_path)
    message = str(error.value)
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"):
        assert str(tmp_path / "raw" / name) in message
    assert "qm9.zip" in message and "3195404" in message


def test_qm9_splits() -> None:
    splits = cormorant_split(130_831)
    assert [len(splits[name]) for name in ("train", "valid", "test")] == [100_000, 17_748, 13_083]
    np.random.seed(0)  # noqa: NPY002 -- Cormorant's own calls, verbatim
    assert np.array_equal(splits["train"], np.random.permutation(130_831)[:100_000])  # noqa: NPY002
    standard = random_split(130_831)
    assert [len(standard[name]) for name in ("train", "valid", "test")] == [110_000, 10_000, 10_831]
    assert np.array_equal(np.sort(np.concatenate(list(standard.values()))), np.arange(130_831))
    assert np.array_equal(random_split(130_831, seed=1)["test"], random_split(130_831, seed=1)["test"])
    assert not np.array_equal(random_split(130_831, seed=1)["test"], standard["test"])


# ------------------------------------------------------------------------------------------ MD17 / rMD17 / MD22
def trajectory(frames: int = 5, atoms: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    pos = rng.normal(size=(frames, atoms, 3)) + np.arange(atoms)[None, :, None] * 2.0
    return {"R": pos, "z": np.array([6, 1, 1, 8]), "E": rng.normal(size=(frames, 1)), "F": rng.normal(size=pos.shape)}


@pytest.mark.parametrize("layout", ["md17", "md22", "rmd17"])
def test_md_npz_round_trip(tmp_path: Path, layout: str) -> None:
    data = trajectory()
    path = tmp_path / f"{layout}_mol.npz"
    if layout == "rmd17":
        np.savez(
            path,
            coords=data["R"],
            nuclear_charges=data["z"],
            energies=data["E"][:, 0],
            forces=data["F"],
            old_indices=np.arange(5),
        )
    else:
        np.savez(path, R=data["R"], z=data["z"], E=data["E"], F=data["F"], name=np.array(layout))
    dataset = MDTrajectoryDataset(path, dtype=torch.float64)
    kcal = MDTrajectoryDataset(path, units="kcal/mol", dtype=torch.float64)
    assert len(dataset) == 5 and dataset.num_atoms().tolist() == [4] * 5
    for frame in range(5):
        graph = dataset[frame]
        np.testing.assert_array_equal(graph.pos.numpy(), data["R"][frame])
        assert graph.z.tolist() == [6, 1, 1, 8]
        assert float(kcal[frame].energy[0]) == data["E"][frame, 0]
        np.testing.assert_array_equal(kcal[frame].forces.numpy(), data["F"][frame])
        assert float(graph.energy[0]) == data["E"][frame, 0] * KCAL_PER_MOL
        np.testing.assert_allclose(graph.forces.numpy(), data["F"][frame] * KCAL_PER_MOL, rtol=1e-15)


def test_md_npz_errors(tmp_path: Path) -> None:
    data = trajectory()
    bad_forces = tmp_path / "bad.npz"
    np.savez(bad_forces, R=data["R"], z=data["z"], E=data["E"], F=data["F"][:, :3])
    with pytest.raises(FrameError, match=rf"{bad_forces}: forces has shape \[5, 3, 3\], expected \[5, 4, 3\]"):
        MDTrajectoryDataset(bad_forces)
    missing = tmp_path / "missing.npz"
    np.savez(missing, R=data["R"], z=data["z"])
    with pytest.raises(FrameError, match="match neither"):
        MDTrajectoryDataset(missing)
    nan = tmp_path / "nan.npz"
    data["F"][3, 2, 0] = np.nan
    np.savez(nan, **data)
    dataset = MDTrajectoryDataset(nan)
    with pytest.raises(FrameError, match=rf"{nan}:3: forces contain NaN or inf at atoms \[2\]"):
        dataset[3]
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(bad_forces.read_bytes()[:200])
    with pytest.raises(FrameError, match=rf"{truncated}: not a readable npz file"):
        MDTrajectoryDataset(truncated)
    index_file = tmp_path / "index_train_01.csv"
    index_file.write_text("3\n0\n4\n")
    assert read_index_file(index_file).tolist() == [3, 0, 4]


# ---------------------------------------------------------------------------------------------------- SDF / MOL2
MOL2_ETHENE = """@<TRIPOS>MOLECULE
ethene
 6 5 0 0 0
SMALL
NO_CHARGES

@<TRIPOS>ATOM
      1 C1          0.0000    0.0000    0.6650 C.2       1 ETH   0.0000
      2 C2          0.0000    0.0000   -0.6650 C.2       1 ETH   0.0000
      3 H1          0.0000    0.9236    1.2398 H         1 ETH   0.0000
      4 H2          0.0000   -0.9236    1.2398 H         1 ETH   0.0000
      5 H3          0.0000    0.9236   -1.2398 H         1 ETH   0.0000
      6 H4          0.0000   -0.9236   -1.2398 H         1 ETH   0.0000
@<TRIPOS>BOND
     1     1     2    2
     2     1     3    1
     3     1     4    1
     4     2     5    1
     5     2     6    1
"""


def test_sdf_and_mol2_keep_bonds(tmp_path: Path) -> None:
    sdf = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(sdf))
    mols = [embedded(smiles, seed) for seed, smiles in enumerate(["CC#N", "c1ccccc1O"])]
    for mol in mols:
        mol.SetProp("energy", "-12.5")
        writer.write(mol)
    writer.close()
    mol2 = tmp_path / "ethene.mol2"
    mol2.write_text(MOL2_ETHENE + MOL2_ETHENE.replace("ethene", "ethene_copy"))
    dataset = MoleculeFileDataset([sdf, mol2], dtype=torch.float64)
    assert len(dataset) == 4
    acetonitrile = dataset[0]
    np.testing.assert_allclose(acetonitrile.pos.numpy(), mols[0].GetConformer().GetPositions(), atol=1e-4)
    assert acetonitrile.energy.tolist() == [-12.5]
    assert acetonitrile.bond_index.shape == (2, 2 * mols[0].GetNumBonds())
    assert 2 in acetonitrile.bond_type.tolist()  # the triple bond
    ethene = dataset[2]
    assert ethene.z.tolist() == [6, 6, 1, 1, 1, 1]
    assert ethene.bond_index[:, :2].tolist() == [[0, 1], [1, 0]] and ethene.bond_type[:2].tolist() == [1, 1]
    assert dataset.where(3) == f"{mol2}:1" and dataset[3].name == "ethene_copy"


def test_bad_molecule_files(tmp_path: Path) -> None:
    sdf = tmp_path / "broken.sdf"
    good = Chem.MolToMolBlock(embedded("CO", 0))
    sdf.write_text(good + "$$$$\n" + good.replace("V2000", "V9999") + "$$$$\n")
    with pytest.raises(DatasetError, match=rf"{sdf}:1: RDKit cannot parse this molecule"):
        MoleculeFileDataset(sdf)
