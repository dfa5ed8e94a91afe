"""QM9 (Ramakrishnan et al., 2014) from PyG's raw layout, with its 19 targets in PyG's order and units.

Raw files under ``root/raw``, exactly as PyG's ``QM9`` expects them:

- ``gdb9.sdf``: the 133,885 molecules (3D coordinates, hydrogens explicit, bonds), from ``qm9.zip`` of
  DeepChem (``gdb9.sdf`` and ``gdb9.sdf.csv`` inside);
- ``gdb9.sdf.csv``: ``mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,
  h298_atom,g298_atom``, one row per molecule (energies in Hartree, atomisation energies in kcal/mol);
- ``uncharacterized.txt``: the 3,054 molecules that failed the consistency check (figshare file 3195404), one
  1-based index at the start of each data line; they are skipped, as in PyG and Cormorant.

Each graph has ``pos [N, 3]`` (Å), ``z [N]``, bonds ``bond_index [2, 2B]`` (both directions) with
``bond_type [2B]`` (0 single, 1 double, 2 triple, 3 aromatic), ``y [1, 19]`` (float64, the targets below),
``idx [1]`` (0-based position in ``gdb9.sdf``) and ``name`` (``gdb_<id>``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from zoo.datasets.base import FrameError
from zoo.datasets.molecules import mol_to_graph
from zoo.datasets.processed import ProcessedDataset
from zoo.graph import AtomsGraph, GraphError

__all__ = ["QM9", "QM9_TARGETS", "cormorant_split", "random_split"]

HARTREE_TO_EV = 27.211386246
KCAL_PER_MOL_TO_EV = 0.04336414

# (name, unit, factor from the csv's unit) in PyG's order of ``y``; the csv holds A, B, C first.
QM9_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("mu", "D", 1.0),
    ("alpha", "a0^3", 1.0),
    ("homo", "eV", HARTREE_TO_EV),
    ("lumo", "eV", HARTREE_TO_EV),
    ("gap", "eV", HARTREE_TO_EV),
    ("r2", "a0^2", 1.0),
    ("zpve", "eV", HARTREE_TO_EV),
    ("U0", "eV", HARTREE_TO_EV),
    ("U", "eV", HARTREE_TO_EV),
    ("H", "eV", HARTREE_TO_EV),
    ("G", "eV", HARTREE_TO_EV),
    ("cv", "cal/(mol K)", 1.0),
    ("U0_atom", "eV", KCAL_PER_MOL_TO_EV),
    ("U_atom", "eV", KCAL_PER_MOL_TO_EV),
    ("H_atom", "eV", KCAL_PER_MOL_TO_EV),
    ("G_atom", "eV", KCAL_PER_MOL_TO_EV),
    ("A", "GHz", 1.0),
    ("B", "GHz", 1.0),
    ("C", "GHz", 1.0),
)
QM9_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip"
UNCHARACTERIZED_URL = "https://ndownloader.figshare.com/files/3195404"


def read_uncharacterized(path: str | os.PathLike[str]) -> list[int]:
    """0-based indices listed in ``uncharacterized.txt`` (lines whose first token is an integer, as Cormorant)."""
    indices = []
    with open(path) as handle:
        for line in handle:
            tokens = line.split()
            if tokens and tokens[0].isdigit():
                indices.append(int(tokens[0]) - 1)
    return indices


def read_targets(path: str | os.PathLike[str]) -> np.ndarray:
    """``[M, 19]`` float64 targets of ``gdb9.sdf.csv`` in :data:`QM9_TARGETS` order and units.

    Raises:
        FrameError: a row without 19 numbers (``where`` = ``file:row``, 0-based after the header).
    """
    rows = []
    with open(path) as handle:
        handle.readline()
        for row, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                values = [float(value) for value in line.split(",")[1:20]]
            except ValueError as error:
                raise FrameError(f"{path}:{row}", f"not a row of numbers ({error})") from error
            if len(values) != 19:
                raise FrameError(f"{path}:{row}", f"has {len(values)} targets, expected 19")
            rows.append(values)
    targets = np.asarray(rows, dtype=np.float64).reshape(-1, 19)
    targets = np.concatenate([targets[:, 3:], targets[:, :3]], axis=1)
    return targets * np.array([factor for _, _, factor in QM9_TARGETS])


class QM9(ProcessedDataset):
    """QM9 from ``root/raw`` (PyG layout), processed once to ``root/processed/qm9.pt``.

    Args:
        root: dataset directory.
        transform: applied to each item.
        pre_transform: applied once before saving (recomputed when it changes).

    Raises:
        MissingRawFilesError: a raw file is missing; the message lists each with its URL.
        FrameError: a molecule RDKit cannot read, or a csv row that does not match (``file:index``).

    Example (with the raw files in place)::

        dataset = QM9("data/qm9")
        splits = cormorant_split(len(dataset))
        homo = dataset[0].y[0, QM9.target_index("homo")]   # eV
    """

    name = "qm9"
    raw_files = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")
    version = 1

    @staticmethod
    def target_index(name: str) -> int:
        """Column of target ``name`` in ``y`` (see :data:`QM9_TARGETS`)."""
        names = [target for target, _, _ in QM9_TARGETS]
        if name not in names:
            raise KeyError(f"unknown QM9 target {name!r}; choose among {names}")
        return names.index(name)

    def missing_message(self, missing: list[str]) -> str:
        sources = {
            "gdb9.sdf": f"inside {QM9_URL}",
            "gdb9.sdf.csv": f"inside {QM9_URL}",
            "uncharacterized.txt": f"{UNCHARACTERIZED_URL} (save it as uncharacterized.txt)",
        }
        lines = "\n".join(f"  {self.raw_dir / name}  <- {sources[name]}" for name in missing)
        return (
            f"QM9 raw files are missing; place them as follows (or call zoo.datasets.load('qm9', root=..., "
            f"download=True) with internet access):\n{lines}"
        )

    def process_raw(self) -> list[AtomsGraph]:
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        sdf = self.raw_dir / "gdb9.sdf"
        targets = read_targets(self.raw_dir / "gdb9.sdf.csv")
        skip = set(read_uncharacterized(self.raw_dir / "uncharacterized.txt"))
        supplier = Chem.SDMolSupplier(str(sdf), removeHs=False, sanitize=False)
        if len(supplier) != len(targets):
            raise FrameError(str(sdf), f"holds {len(supplier)} molecules but gdb9.sdf.csv has {len(targets)} rows")
        graphs = []
        for index, mol in enumerate(supplier):
            if index in skip:
                continue
            if mol is None:
                raise FrameError(f"{sdf}:{index}", "RDKit cannot parse this molecule")
            try:
                graphs.append(_molecule_graph(mol, targets[index], index))
            except GraphError as error:
                raise FrameError(f"{sdf}:{index}", str(error)) from error
        return graphs


def _molecule_graph(mol: object, target: np.ndarray, index: int) -> AtomsGraph:
    graph = mol_to_graph(mol)
    graph.y = torch.as_tensor(target, dtype=torch.float64).reshape(1, 19)
    graph.idx = torch.tensor([index])
    return graph


def cormorant_split(num_molecules: int, *, num_train: int = 100_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Cormorant's QM9 split (used by EDM, GeoLDM, EGNN): ``np.random.seed(seed)``, a permutation of the
    characterised molecules, the first ``num_train`` for training, the last ``int(0.1 * M)`` for test, the
    rest for validation (100,000 / 17,748 / 13,083 of 130,831).

    Returns:
        ``{"train", "valid", "test"}`` -> int64 positions in the dataset (which holds exactly the characterised
        molecules, in file order, as Cormorant's ``included_idxs``).
    """
    num_test = int(0.1 * num_molecules)
    num_valid = num_molecules - (num_train + num_test)
    if num_valid < 0:
        raise ValueError(f"{num_molecules} molecules are too few for {num_train} training and {num_test} test ones")
    permutation = np.random.RandomState(seed).permutation(num_molecules)
    train, valid, test = np.split(permutation, [num_train, num_train + num_valid])
    return {"train": train, "valid": valid, "test": test}


def random_split(
    num_molecules: int, *, num_train: int = 110_000, num_valid: int = 10_000, seed: int = 0
) -> dict[str, np.ndarray]:
    """The standard QM9 split of SchNet/DimeNet/PaiNN: a seeded permutation (``np.random.default_rng(seed)``),
    ``num_train`` for training, ``num_valid`` for validation, the rest (10,831 of 130,831) for test."""
    if num_train + num_valid > num_molecules:
        raise ValueError(f"{num_molecules} molecules are too few for {num_train} + {num_valid}")
    permutation = np.random.default_rng(seed).permutation(num_molecules)
    train, valid, test = np.split(permutation, [num_train, num_train + num_valid])
    return {"train": train, "valid": valid, "test": test}
