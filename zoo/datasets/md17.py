"""Molecular-dynamics trajectories in npz files: MD17 and MD22 (sGDML layout) and rMD17.

Layouts (one molecule per file, ``T`` frames of ``N`` atoms):

- sGDML (MD17, MD22, e.g. ``md17_aspirin.npz``, ``md22_Ac-Ala3-NHMe.npz``): ``R [T, N, 3]`` Å, ``z [N]``,
  ``E [T]`` or ``[T, 1]`` kcal/mol, ``F [T, N, 3]`` kcal/mol/Å (plus ``name``, ``theory``, ...).
- rMD17 (``rmd17_aspirin.npz``): ``coords [T, N, 3]`` Å, ``nuclear_charges [N]``, ``energies [T]`` kcal/mol,
  ``forces [T, N, 3]`` kcal/mol/Å, ``old_indices [T]`` (frame of the original MD17 file). Its official splits
  are ``splits/index_{train,test}_0{1..5}.csv`` (one frame index per line): :func:`read_index_file`.

Energies and forces are converted to eV and eV/Å (``units="eV"``, 1 kcal/mol = ``ase.units.kcal / ase.units.mol``
eV) or kept in kcal/mol (``units="kcal/mol"``), as many MD17 papers report them.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import ase.units
import numpy as np
import torch

from zoo.datasets.base import FrameError, StructureDataset, Transform, check_graph
from zoo.graph import AtomsGraph

__all__ = ["KCAL_PER_MOL", "MDTrajectoryDataset", "read_index_file"]

KCAL_PER_MOL = ase.units.kcal / ase.units.mol  # eV
_LAYOUTS = {
    "sgdml": {"pos": "R", "z": "z", "energy": "E", "forces": "F"},
    "rmd17": {"pos": "coords", "z": "nuclear_charges", "energy": "energies", "forces": "forces"},
}


def read_index_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Frame indices of an rMD17 split file (one integer per line) as int64."""
    return np.loadtxt(path, dtype=np.int64).reshape(-1)


class MDTrajectoryDataset(StructureDataset):
    """Frames of an MD17, rMD17 or MD22 npz file as graphs with ``energy [1]`` and ``forces [N, 3]``.

    Args:
        path: the npz file (layout detected from its keys).
        units: ``"eV"`` (energy in eV, forces in eV/Å) or ``"kcal/mol"`` (as stored).
        transform: applied to each graph.
        dtype: float dtype of positions and labels (default ``torch.get_default_dtype()``).

    Raises:
        FrameError: the file is missing, has neither layout, or arrays whose shapes do not match (``where`` = the
            file). Items raise :class:`~zoo.datasets.FrameError` (``file:frame``) for NaN or inf.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        units: str = "eV",
        transform: Transform | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(transform)
        if units not in ("eV", "kcal/mol"):
            raise ValueError(f"units must be 'eV' or 'kcal/mol', got {units!r}")
        self.path = Path(path)
        self.units = units
        self.dtype = dtype
        if not self.path.is_file():
            raise FrameError(str(self.path), "file not found")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                keys = set(archive.files)
                layout = next((name for name, names in _LAYOUTS.items() if set(names.values()) <= keys), None)
                if layout is None:
                    raise FrameError(
                        str(self.path),
                        f"keys {sorted(keys)} match neither MD17/MD22 (R, z, E, F) nor rMD17 (coords, "
                        "nuclear_charges, energies, forces)",
                    )
                self.layout = layout
                arrays = {field: archive[key] for field, key in _LAYOUTS[layout].items()}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise FrameError(str(self.path), f"not a readable npz file ({error})") from error
        pos, z, energy, forces = arrays["pos"], arrays["z"].reshape(-1), arrays["energy"], arrays["forces"]
        frames, atoms = (pos.shape[0], pos.shape[1]) if pos.ndim == 3 else (-1, -1)
        expected = {"pos": (frames, atoms, 3), "forces": (frames, atoms, 3), "z": (atoms,)}
        for name, value in (("pos", pos), ("forces", forces), ("z", z)):
            if pos.ndim != 3 or value.shape != expected[name]:
                raise FrameError(
                    str(self.path), f"{name} has shape {list(value.shape)}, expected {list(expected[name])}"
                )
        energy = energy.reshape(-1) if energy.size == frames else energy
        if energy.shape != (frames,):
            expected_energy = f"[{frames}] or [{frames}, 1]"
            raise FrameError(str(self.path), f"energy has shape {list(energy.shape)}, expected {expected_energy}")
        scale = KCAL_PER_MOL if units == "eV" else 1.0
        self._pos = torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float64))
        self._z = torch.from_numpy(z.astype(np.int64))
        self._energy = torch.from_numpy(energy.astype(np.float64) * scale)
        self._forces = torch.from_numpy(forces.astype(np.float64) * scale)

    def __len__(self) -> int:
        return int(self._pos.shape[0])

    def where(self, index: int) -> str:
        return f"{self.path}:{index}"

    def get(self, index: int) -> AtomsGraph:
        dtype = torch.get_default_dtype() if self.dtype is None else self.dtype
        graph = AtomsGraph.build(
            self._pos[index].to(dtype),
            self._z,
            energy=self._energy[index : index + 1],
            forces=self._forces[index],
        )
        check_graph(graph)
        return graph

    def num_atoms(self) -> np.ndarray:
        return np.full(len(self), self._z.numel(), dtype=np.int64)
