"""Generate the molecule set of the embedded demo diffusion model `edm-demo` (toy data, made offline).

Small neutral molecules of C, N, O and F (3 to 9 heavy atoms, QM9-like sizes) are grown as random graphs from
``--seed``: atoms are attached one at a time to an atom with free valence (single bonds mostly, some double and
triple), then 0 to 2 ring closures make 3-, 5- or 6-membered rings. Each distinct canonical SMILES gets
hydrogens, one ETKDGv3 conformer and an MMFF94 relaxation (RDKit, seeded). A molecule is kept only when every
atom is stable under EDM's bond-length table (:func:`zoo.metrics.molecules.atom_stability`), so the sampled
metrics of a model trained on it are comparable with the data's own (100 %).

Writes ``train.extxyz`` and ``val.extxyz`` (90/10, SMILES in ``atoms.info["smiles"]``) and ``smiles.txt`` (the
training SMILES, for novelty). Deterministic from ``--seed`` for a given RDKit version.

    python scripts/make_edm_demo_data.py --out data/edm-demo --num 3500 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase
import ase.io
import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

from zoo.metrics.molecules import atom_stability

ELEMENTS = ("C", "N", "O", "F")
ELEMENT_WEIGHTS = (0.70, 0.13, 0.14, 0.03)
VALENCE = {"C": 4, "N": 3, "O": 2, "F": 1}
BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def random_smiles(rng: np.random.Generator, n_heavy: int) -> str | None:
    """Canonical SMILES of a random valence-respecting graph of ``n_heavy`` heavy atoms (``None``: rejected)."""
    symbols = [str(rng.choice(ELEMENTS[:3], p=np.array(ELEMENT_WEIGHTS[:3]) / sum(ELEMENT_WEIGHTS[:3])))]
    free = [VALENCE[symbols[0]]]
    bonds: dict[tuple[int, int], int] = {}
    for new in range(1, n_heavy):
        anchors = [i for i, f in enumerate(free) if f > 0]
        if not anchors:
            return None
        anchor = int(rng.choice(anchors))
        symbol = str(rng.choice(ELEMENTS, p=ELEMENT_WEIGHTS))
        room = min(free[anchor], VALENCE[symbol])
        order = 1
        if room >= 3 and rng.random() < 0.05:
            order = 3
        elif room >= 2 and rng.random() < 0.2:
            order = 2
        symbols.append(symbol)
        free.append(VALENCE[symbol] - order)
        free[anchor] -= order
        bonds[(anchor, new)] = order
    mol = Chem.RWMol()
    for symbol in symbols:
        mol.AddAtom(Chem.Atom(symbol))
    for (i, j), order in bonds.items():
        mol.AddBond(i, j, BOND_TYPES[order])
    for _ in range(int(rng.choice(3, p=(0.55, 0.35, 0.10)))):
        distances = Chem.GetDistanceMatrix(mol, force=True)
        pairs = [
            (i, j)
            for i in range(n_heavy)
            for j in range(i + 1, n_heavy)
            if free[i] > 0 and free[j] > 0 and distances[i, j] in (2, 4, 5)
        ]
        if not pairs:
            break
        i, j = pairs[int(rng.integers(len(pairs)))]
        mol.AddBond(i, j, Chem.BondType.SINGLE)
        free[i] -= 1
        free[j] -= 1
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    return Chem.MolToSmiles(mol)


def conformer(smiles: str, seed: int) -> ase.Atoms | None:
    """ETKDGv3 + MMFF94 conformer with hydrogens, or ``None`` when embedding/MMFF fails or an atom is unstable."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0 or not AllChem.MMFFHasAllMoleculeParams(mol):
        return None
    if AllChem.MMFFOptimizeMolecule(mol, maxIters=2000) != 0:
        return None
    positions = mol.GetConformer().GetPositions()
    atoms = ase.Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions - positions.mean(0))
    if not atom_stability(atoms).all():
        return None
    atoms.info["smiles"] = smiles
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/edm-demo"))
    parser.add_argument("--num", type=int, default=3500, help="molecules in total (train + val)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-heavy", type=int, default=3)
    parser.add_argument("--max-heavy", type=int, default=9)
    args = parser.parse_args()
    RDLogger.DisableLog("rdApp.*")
    rng = np.random.default_rng(args.seed)
    seen: set[str] = set()
    molecules: list[ase.Atoms] = []
    attempts = 0
    while len(molecules) < args.num:
        attempts += 1
        smiles = random_smiles(rng, int(rng.integers(args.min_heavy, args.max_heavy + 1)))
        if smiles is None or smiles in seen:
            continue
        seen.add(smiles)
        atoms = conformer(smiles, seed=int(rng.integers(2**31 - 1)))
        if atoms is not None:
            molecules.append(atoms)
    order = rng.permutation(len(molecules))
    n_val = len(molecules) // 10
    val = [molecules[i] for i in order[:n_val]]
    train = [molecules[i] for i in order[n_val:]]
    args.out.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.out / "train.extxyz", train)
    ase.io.write(args.out / "val.extxyz", val)
    (args.out / "smiles.txt").write_text("".join(a.info["smiles"] + "\n" for a in train))
    sizes = np.bincount([len(a) for a in train])
    print(f"{len(train)} train / {len(val)} val molecules from {attempts} graphs ({len(seen)} distinct SMILES)")
    print("atoms per molecule (train):", {k: int(v) for k, v in enumerate(sizes) if v})


if __name__ == "__main__":
    main()
