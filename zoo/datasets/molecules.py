"""Molecules with bonds from SDF and MOL2 files, read with RDKit.

Each molecule becomes a graph with ``pos [N, 3]`` (Å, from its first conformer), ``z [N]``, ``charge [1]`` (sum
of formal charges, e), bonds ``bond_index [2, 2B]`` (both directions; batched like ``edge_index``) and
``bond_type [2B]`` (0 single, 1 double, 2 triple, 3 aromatic), ``name`` (the ``_Name`` line) and, if the SD file
has a data field named like ``keys.energy``, ``energy [1]`` (taken as eV).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.datasets.base import DatasetError, FrameError, LabelKeys, StructureDataset, Transform, check_graph
from zoo.graph import AtomsGraph, GraphError

__all__ = ["BOND_TYPES", "MoleculeFileDataset", "mol_to_graph"]

BOND_TYPES = {"SINGLE": 0, "DOUBLE": 1, "TRIPLE": 2, "AROMATIC": 3}


def mol_to_graph(mol: Any, *, energy_key: str = "energy", dtype: torch.dtype | None = None) -> AtomsGraph:
    """An RDKit molecule (with a conformer) as a graph with bonds (fields in the module docstring).

    Raises:
        GraphError: no conformer, a bond type other than single/double/triple/aromatic, a bad structure.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if mol.GetNumConformers() == 0:
        raise GraphError("the molecule has no 3D conformer")
    pos = torch.as_tensor(mol.GetConformer().GetPositions(), dtype=dtype)
    z = torch.tensor([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=torch.long)
    bonds, types = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        kind = BOND_TYPES.get(str(bond.GetBondType()))
        if kind is None:
            raise GraphError(f"bond {i}-{j} has type {bond.GetBondType()}, not single/double/triple/aromatic")
        bonds += [(i, j), (j, i)]
        types += [kind, kind]
    fields: dict[str, Any] = {
        "charge": sum(atom.GetFormalCharge() for atom in mol.GetAtoms()),
        "bond_index": torch.tensor(bonds, dtype=torch.long).reshape(-1, 2).T.contiguous(),
        "bond_type": torch.tensor(types, dtype=torch.long),
        "name": mol.GetProp("_Name") if mol.HasProp("_Name") else "",
    }
    if mol.HasProp(energy_key):
        try:
            fields["energy"] = torch.tensor([float(mol.GetProp(energy_key))], dtype=torch.float64)
        except ValueError as error:
            raise GraphError(f"{energy_key} = {mol.GetProp(energy_key)!r} is not a number") from error
    graph = AtomsGraph.build(pos, z, **fields)
    check_graph(graph)
    return graph


def _split_mol2(text: str) -> list[str]:
    blocks = text.split("@<TRIPOS>MOLECULE")
    return ["@<TRIPOS>MOLECULE" + block for block in blocks[1:]]


class MoleculeFileDataset(StructureDataset):
    """Every molecule of ``.sdf``/``.mol``/``.mol2`` files (RDKit), with bonds, held in memory as RDKit molecules.

    Args:
        paths: one file or several.
        keys: ``keys.energy`` names the SD data field holding the energy (eV), if any.
        sanitize: let RDKit sanitise (kekulise, check valences); ``False`` keeps the file's bonds as written.
        transform: applied to each graph.
        dtype: float dtype of positions.

    Raises:
        DatasetError: missing files and molecules RDKit cannot parse, each as ``file:index``.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
        *,
        keys: LabelKeys | None = None,
        sanitize: bool = False,
        transform: Transform | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        super().__init__(transform)
        self.keys = keys or LabelKeys()
        self.dtype = dtype
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self._mols: list[tuple[str, Any]] = []
        problems: list[FrameError] = []
        for path in map(Path, paths):
            if not path.is_file():
                problems.append(FrameError(str(path), "file not found"))
                continue
            if path.suffix.lower() == ".mol2":
                blocks = _split_mol2(path.read_text())
                mols = [Chem.MolFromMol2Block(block, sanitize=sanitize, removeHs=False) for block in blocks]
            else:
                mols = list(Chem.SDMolSupplier(str(path), sanitize=sanitize, removeHs=False))
            if not mols:
                problems.append(FrameError(str(path), "holds no molecules"))
            for index, mol in enumerate(mols):
                if mol is None:
                    problems.append(FrameError(f"{path}:{index}", "RDKit cannot parse this molecule"))
                else:
                    self._mols.append((f"{path}:{index}", mol))
        if problems:
            raise DatasetError(problems)

    def __len__(self) -> int:
        return len(self._mols)

    def where(self, index: int) -> str:
        return self._mols[index][0]

    def mol(self, index: int) -> Any:
        """The RDKit molecule of item ``index``."""
        return self._mols[index][1]

    def get(self, index: int) -> AtomsGraph:
        return mol_to_graph(self._mols[index][1], energy_key=self.keys.energy, dtype=self.dtype)

    def num_atoms(self) -> np.ndarray:
        return np.array([mol.GetNumAtoms() for _, mol in self._mols], dtype=np.int64)
