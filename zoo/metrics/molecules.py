r"""Quality metrics of generated 3D molecules (EDM protocol, Hoogeboom et al. 2022).

Bonds are not generated, so every metric first infers them from the geometry, by one of two methods named in
each result (``bond_inference``):

* ``"edm-table"`` — EDM's rule (official ``qm9/bond_analyze.py``): atoms :math:`a, b` at distance :math:`d`
  (pm) have a bond of order 3, 2 or 1 when :math:`d < \ell_3(a, b) + 3`, :math:`d < \ell_2(a, b) + 5`,
  :math:`d < \ell_1(a, b) + 10`, with :math:`\ell_k` tabulated typical lengths (pairs without a length get no
  bond of that order).
* ``"rdkit"`` — RDKit's ``rdDetermineBonds`` (connectivity from covalent radii, bond orders from valences).

Metrics: atom stability (fraction of atoms whose summed bond order equals an allowed valence), molecule
stability (fraction of molecules with all atoms stable) — both with the EDM table, as the paper; RDKit validity
(the molecule sanitises; its largest fragment is kept, as EDM does), uniqueness (distinct valid SMILES / valid),
novelty (unique SMILES absent from a training set / unique) and connectivity (a single bonded fragment). SMILES
are canonical RDKit SMILES without explicit hydrogens. Results carry the RDKit version.

Example:
    >>> from ase.build import molecule
    >>> stability([molecule("CH4"), molecule("H2O")])["molecule_stability"]
    1.0
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import ase
import numpy as np

__all__ = [
    "ALLOWED_VALENCES",
    "BondInference",
    "atom_stability",
    "canonical_smiles",
    "connectivity",
    "edm_bond_order",
    "edm_bond_orders",
    "molecule_metrics",
    "novelty",
    "rdkit_version",
    "smiles",
    "stability",
    "to_rdkit",
    "uniqueness",
    "validity",
]

BondInference = Literal["edm-table", "rdkit"]

# Typical bond lengths in pm (EDM's table, symmetric), single / double / triple.
_SINGLE = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "B": 119, "Si": 148, "P": 144, "As": 152, "S": 134,
          "Cl": 127, "Br": 141, "I": 161},
    "C": {"C": 154, "N": 147, "O": 143, "F": 135, "Si": 185, "P": 184, "S": 182, "Cl": 177, "Br": 194, "I": 214},
    "N": {"N": 145, "O": 140, "F": 136, "Cl": 175, "Br": 214, "S": 168, "I": 222, "P": 177},
    "O": {"O": 148, "F": 142, "Br": 172, "S": 151, "P": 163, "Si": 163, "Cl": 164, "I": 194},
    "F": {"F": 142, "S": 158, "Si": 160, "Cl": 166, "Br": 178, "P": 156, "I": 187},
    "B": {"Cl": 175},
    "Si": {"Si": 233, "S": 200, "Cl": 202, "Br": 215, "I": 243},
    "Cl": {"Cl": 199, "P": 203, "S": 207, "Br": 214},
    "S": {"S": 204, "Br": 225, "P": 210, "I": 234},
    "Br": {"Br": 228, "P": 222},
    "P": {"P": 221},
    "I": {"I": 266},
}  # fmt: skip
_DOUBLE = {"C": {"C": 134, "N": 129, "O": 120, "S": 160}, "N": {"N": 125, "O": 121}, "O": {"O": 121, "P": 150},
           "P": {"S": 186}}  # fmt: skip
_TRIPLE = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"N": 110}}
_MARGINS = (10, 5, 3)  # pm added to the single, double and triple lengths (tuned by EDM on QM9)
ALLOWED_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,), "P": (3, 5),
    "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2), "Bi": (3, 5),
}  # fmt: skip


def _symmetric(table: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for a, row in table.items():
        for b, length in row.items():
            out[(a, b)] = out[(b, a)] = length
    return out


_LENGTHS = tuple(_symmetric(t) for t in (_SINGLE, _DOUBLE, _TRIPLE))


def edm_bond_order(symbol_a: str, symbol_b: str, distance: float) -> int:
    """EDM's bond order (0-3) of two atoms ``distance`` Å apart (0 for pairs without a tabulated length)."""
    pm = 100.0 * distance
    order = 0
    for k, (lengths, margin) in enumerate(zip(_LENGTHS, _MARGINS, strict=True)):
        length = lengths.get((symbol_a, symbol_b))
        if length is None or pm >= length + margin:
            break
        order = k + 1
    return order


def edm_bond_orders(atoms: ase.Atoms) -> np.ndarray:
    """``[M, M]`` symmetric integer matrix of EDM bond orders (zero diagonal)."""
    symbols = atoms.get_chemical_symbols()
    distances = atoms.get_all_distances()
    orders = np.zeros((len(atoms), len(atoms)), dtype=np.int64)
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            orders[i, j] = orders[j, i] = edm_bond_order(symbols[i], symbols[j], float(distances[i, j]))
    return orders


def atom_stability(atoms: ase.Atoms) -> np.ndarray:
    """``[M]`` bool: the summed EDM bond order of each atom is one of its :data:`ALLOWED_VALENCES`."""
    valence = edm_bond_orders(atoms).sum(axis=1)
    symbols = atoms.get_chemical_symbols()
    return np.array([int(v) in ALLOWED_VALENCES.get(s, ()) for s, v in zip(symbols, valence, strict=True)], bool)


def stability(molecules: Sequence[ase.Atoms]) -> dict[str, Any]:
    """``{"atom_stability", "molecule_stability", "n_molecules", "bond_inference": "edm-table"}`` (fractions)."""
    if not molecules:
        raise ValueError("no molecules given")
    stable = [atom_stability(atoms) for atoms in molecules]
    n_atoms = sum(len(s) for s in stable)
    return {
        "atom_stability": sum(int(s.sum()) for s in stable) / max(n_atoms, 1),
        "molecule_stability": sum(bool(s.all()) for s in stable) / len(molecules),
        "n_molecules": len(molecules),
        "bond_inference": "edm-table",
    }


# ------------------------------------------------------------------------------------------------------ RDKit
def _check_method(bond_inference: str) -> None:
    if bond_inference not in ("edm-table", "rdkit"):
        raise ValueError(f"bond_inference must be 'edm-table' or 'rdkit', got {bond_inference!r}")


def _rdkit() -> Any:
    if importlib.util.find_spec("rdkit") is None:
        raise ImportError("RDKit is needed for validity, uniqueness, novelty and connectivity: pip install rdkit")
    from rdkit import Chem

    return Chem


def rdkit_version() -> str | None:
    """The installed RDKit version, or ``None``."""
    if importlib.util.find_spec("rdkit") is None:
        return None
    import rdkit

    return rdkit.__version__


def _bare_molecule(atoms: ase.Atoms) -> Any:
    """An RDKit ``RWMol`` with the atoms and their 3D coordinates, no bonds."""
    chem = _rdkit()
    mol = chem.RWMol()
    for symbol in atoms.get_chemical_symbols():
        mol.AddAtom(chem.Atom(symbol))
    conformer = chem.Conformer(len(atoms))
    for i, position in enumerate(atoms.positions):
        conformer.SetAtomPosition(i, [float(c) for c in position])
    mol.AddConformer(conformer, assignId=True)
    return mol


def to_rdkit(atoms: ase.Atoms, bond_inference: BondInference = "edm-table") -> Any:
    """An unsanitised RDKit molecule with 3D coordinates and inferred bonds (``None`` when RDKit's bond-order
    assignment fails)."""
    _check_method(bond_inference)
    chem = _rdkit()
    mol = _bare_molecule(atoms)
    if bond_inference == "edm-table":
        kinds = {1: chem.BondType.SINGLE, 2: chem.BondType.DOUBLE, 3: chem.BondType.TRIPLE}
        orders = edm_bond_orders(atoms)
        for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
            mol.AddBond(int(i), int(j), kinds[int(orders[i, j])])
        return mol.GetMol()
    from rdkit.Chem import rdDetermineBonds

    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except ValueError:
        return None
    return mol.GetMol()


def smiles(atoms: ase.Atoms, bond_inference: BondInference = "edm-table") -> str | None:
    """Canonical SMILES (no explicit H) of the largest fragment, or ``None`` when the molecule does not
    sanitise (EDM's validity test)."""
    chem = _rdkit()
    mol = to_rdkit(atoms, bond_inference)
    if mol is None:
        return None
    try:
        chem.SanitizeMol(mol)
    except ValueError:
        return None
    fragments = chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(fragments, default=mol, key=lambda m: m.GetNumAtoms())
    return chem.MolToSmiles(chem.RemoveHs(largest, sanitize=False))


def _record(bond_inference: BondInference, **values: Any) -> dict[str, Any]:
    return {**values, "bond_inference": bond_inference, "rdkit_version": rdkit_version()}


def validity(molecules: Sequence[ase.Atoms], bond_inference: BondInference = "edm-table") -> dict[str, Any]:
    """``{"validity": fraction that sanitises, "smiles": [valid SMILES], ...}``."""
    if not molecules:
        raise ValueError("no molecules given")
    valid = [s for s in (smiles(atoms, bond_inference) for atoms in molecules) if s is not None]
    return _record(bond_inference, validity=len(valid) / len(molecules), smiles=valid, n_molecules=len(molecules))


def uniqueness(valid_smiles: Sequence[str]) -> float:
    """Distinct SMILES / number of SMILES (0 for none)."""
    return len(set(valid_smiles)) / len(valid_smiles) if valid_smiles else 0.0


def canonical_smiles(smiles_strings: Iterable[str]) -> set[str]:
    """Canonical RDKit SMILES without explicit H of SMILES strings (unparsable ones are dropped)."""
    chem = _rdkit()
    out = set()
    for text in smiles_strings:
        mol = chem.MolFromSmiles(text)
        if mol is not None:
            out.add(chem.MolToSmiles(mol))
    return out


def novelty(valid_smiles: Sequence[str], training_smiles: Iterable[str]) -> float:
    """Fraction of the distinct SMILES not in ``training_smiles`` (canonicalised first; 0 for none)."""
    unique = set(valid_smiles)
    if not unique:
        return 0.0
    known = canonical_smiles(training_smiles)
    return sum(s not in known for s in unique) / len(unique)


def _is_connected(adjacency: np.ndarray) -> bool:
    seen = {0}
    frontier = [0]
    while frontier:
        node = frontier.pop()
        for other in np.nonzero(adjacency[node])[0].tolist():
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return len(seen) == adjacency.shape[0]


def connectivity(molecules: Sequence[ase.Atoms], bond_inference: BondInference = "edm-table") -> dict[str, Any]:
    """``{"connectivity": fraction of molecules whose inferred bonds join all atoms into one fragment, ...}``."""
    _check_method(bond_inference)
    if not molecules:
        raise ValueError("no molecules given")
    connected = 0
    for atoms in molecules:
        if bond_inference == "edm-table":
            adjacency = edm_bond_orders(atoms) > 0
        else:
            from rdkit.Chem import rdDetermineBonds

            mol = _bare_molecule(atoms)
            rdDetermineBonds.DetermineConnectivity(mol)
            adjacency = _rdkit().GetAdjacencyMatrix(mol) > 0
        connected += len(atoms) > 0 and _is_connected(adjacency)
    return _record(bond_inference, connectivity=connected / len(molecules), n_molecules=len(molecules))


def molecule_metrics(
    molecules: Sequence[ase.Atoms],
    training_smiles: Iterable[str] | None = None,
    bond_inference: BondInference = "edm-table",
) -> dict[str, Any]:
    """All metrics: stability (EDM table) and, with RDKit, validity, uniqueness, novelty (when
    ``training_smiles`` is given) and connectivity with ``bond_inference``.

    Returns:
        ``{"atom_stability", "molecule_stability", "validity", "uniqueness", "novelty" (or None),
        "connectivity", "n_molecules", "stability_bond_inference": "edm-table", "bond_inference",
        "rdkit_version"}``.
    """
    stable = stability(molecules)
    valid = validity(molecules, bond_inference)
    return _record(
        bond_inference,
        atom_stability=stable["atom_stability"],
        molecule_stability=stable["molecule_stability"],
        stability_bond_inference=stable["bond_inference"],
        validity=valid["validity"],
        uniqueness=uniqueness(valid["smiles"]),
        novelty=None if training_smiles is None else novelty(valid["smiles"], training_smiles),
        connectivity=connectivity(molecules, bond_inference)["connectivity"],
        n_molecules=len(molecules),
    )
