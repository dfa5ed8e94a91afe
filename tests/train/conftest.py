"""Fixtures for the trainer tests: EMT data of small Cu/Pt/Au cells in extxyz, a saved base potential, and a
launcher that runs the `zoo` command in a subprocess with the test-only architecture registered."""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import zoo

ELEMENTS = ("Cu", "Pt", "Au")
LAUNCHER = Path(__file__).with_name("launch_zoo.py")


def emt_frames(count: int, seed: int) -> list[ase.Atoms]:
    """Rattled, strained 4-atom fcc cells of Cu, Pt or Au, labelled with EMT energies and forces."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        element = str(rng.choice(ELEMENTS))
        atoms = bulk(element, "fcc", cubic=True)
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.02), scale_atoms=True)
        atoms.rattle(0.15, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def emt_data(tmp_path_factory) -> dict[str, Path]:
    """``{"train": 24 frames, "val": 8 frames}`` extxyz files of EMT-labelled Cu/Pt/Au cells."""
    root = tmp_path_factory.mktemp("emt")
    paths = {"train": root / "train.extxyz", "val": root / "val.extxyz"}
    ase.io.write(paths["train"], emt_frames(24, seed=1), format="extxyz")
    ase.io.write(paths["val"], emt_frames(8, seed=2), format="extxyz")
    return paths


def save_base_model(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised `test-pair-potential` (cutoff 4 Å) saved as a zoo checkpoint for Cu, Pt, Au."""
    torch.manual_seed(seed)
    model = zoo.create_model("test-pair-potential", num_basis=16, cutoff=4.0, hidden=32)
    return zoo.save_pretrained(model, directory, metadata={"elements": [29, 78, 79]})


@pytest.fixture
def base_model(tmp_path) -> Path:
    return save_base_model(tmp_path / "base")


def launcher_command() -> list[str]:
    """``python launch_zoo.py``: the `zoo` command with the test-only architecture registered."""
    return [sys.executable, str(LAUNCHER)]


def finetune_command(base, data, output, *options: str) -> list[str]:
    """``zoo finetune`` arguments on the test data set, on the CPU, batch 4, lr 0.01, plus ``options``."""
    common = ["--train", str(data["train"]), "--val", str(data["val"]), "--output", str(output)]
    return ["finetune", str(base), *common, "--device", "cpu", "--batch-size", "4", "--lr", "0.01", *options]
