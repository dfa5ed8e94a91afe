"""Data checks report every problem at once (file and frame); batch order is seeded and splits across ranks."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from zoo.cli.main import main
from zoo.train.data import DataError, batch_indices, rank_slice, read_structures, validate_structures


def _cell(**labels) -> ase.Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


def _bad_files(tmp_path):
    forces = np.zeros((4, 3))
    nan_forces = forces.copy()
    nan_forces[2, 1] = np.nan
    hydrogen = _cell(energy=1.0, forces=forces)
    hydrogen[0].symbol = "H"
    hydrogen.calc = SinglePointCalculator(hydrogen, energy=1.0, forces=forces)
    train = [
        _cell(energy=1.0, forces=forces),  # 0: fine
        _cell(energy=float("nan"), forces=forces),  # 1: NaN energy
        _cell(energy=1.0),  # 2: no forces
        hydrogen,  # 3: H unknown to the model
        _cell(energy=1.0, forces=nan_forces),  # 4: NaN force
        _cell(energy=np.array([1.0, 2.0]), forces=forces),  # 5: energy of the wrong shape
    ]
    val = [_cell(forces=forces), _cell(energy=1.0, forces=forces)]  # val 0: no energy
    paths = tmp_path / "train.extxyz", tmp_path / "val.extxyz"
    ase.io.write(paths[0], train, format="extxyz")
    ase.io.write(paths[1], val, format="extxyz")
    return paths


def test_finetune_reports_all_data_problems_with_file_and_frame(tmp_path, base_model, capsys):
    train, val = _bad_files(tmp_path)
    status = main(
        [
            "finetune",
            str(base_model),
            "--train",
            str(train),
            "--val",
            str(val),
            "-o",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    expected = [
        f"{train}:1: energy contains NaN or inf",
        f"{train}:2: missing forces",
        f"{train}:3: elements unknown to the model: H (the model knows Cu, Pt, Au)",
        f"{train}:4: forces contains NaN or inf",
        f"{train}:5: energy has shape [2], expected [] or [1]",
        f"{val}:0: missing energy",
    ]
    for line in expected:
        assert line in err
    assert f"{train}:0" not in err
    assert "6 problem(s) in 6 of 8 structure(s)" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained


def test_validate_structures_positions_cells_and_custom_keys(tmp_path):
    atoms = _cell(energy=1.0, forces=np.zeros((4, 3)))
    atoms.calc = None
    atoms.info["REF_energy"] = 1.0
    atoms.arrays["REF_forces"] = np.zeros((4, 3))
    broken = atoms.copy()
    broken.positions[1] = np.nan
    path = tmp_path / "custom.extxyz"
    ase.io.write(path, [atoms, broken], format="extxyz")
    structures = read_structures([path])
    keys = {"energy": "REF_energy", "forces": "REF_forces"}
    with pytest.raises(DataError) as error:
        validate_structures(structures, required=["energy", "forces"], keys=keys, elements=["Cu"])
    assert str(error.value).count("\n") == 1
    assert f"{path}:1: positions are NaN or inf at atoms [1]" in str(error.value)
    validate_structures(structures[:1], required=["energy", "forces"], keys=keys, elements=[29])


def test_missing_and_unreadable_files_are_listed_together(tmp_path):
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("not a structure file\n")
    with pytest.raises(DataError) as error:
        read_structures([tmp_path / "missing.extxyz", garbage])
    message = str(error.value)
    assert "missing.extxyz: file not found" in message and "garbage.extxyz: cannot be read" in message


def test_batch_order_is_seeded_and_ranks_split_each_global_batch():
    first = batch_indices(10, 4, seed=3, epoch=1, shuffle=True, drop_last=True)
    assert first == batch_indices(10, 4, seed=3, epoch=1, shuffle=True, drop_last=True)
    assert first != batch_indices(10, 4, seed=3, epoch=2, shuffle=True, drop_last=True)
    assert [len(b) for b in first] == [4, 4]
    assert [len(b) for b in batch_indices(10, 4, seed=3, epoch=1, shuffle=False, drop_last=False)] == [4, 4, 2]
    for batch in ([0, 1, 2, 3], [5, 6, 7]):
        for world in (1, 2, 3):
            parts = [rank_slice(batch, rank, world) for rank in range(world)]
            assert [item for part in parts for item in part] == batch
