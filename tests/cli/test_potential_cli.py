"""`zoo predict`, `zoo relax` and `zoo md` on a tiny saved potential."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc111
from ase.constraints import FixAtoms

import zoo
from zoo.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(2)
    model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1, cutoff=4.0, elements=[8, 29])
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("models") / "tiny")


def test_predict_writes_results(model_dir, tmp_path, capsys):
    ase.io.write(tmp_path / "in.extxyz", [bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.7).repeat(2)])
    for name in ("out.extxyz", "out.db"):
        assert (
            main(["predict", str(tmp_path / "in.extxyz"), "--model", str(model_dir), "-o", str(tmp_path / name)]) == 0
        )
        frames = ase.io.read(tmp_path / name, index=":")
        assert len(frames) == 2 and len(frames[1]) == 8
        assert np.isfinite(frames[1].get_potential_energy()) and frames[1].get_stress().shape == (6,)
    assert "2 structures" in capsys.readouterr().out


def test_relax_respects_fixed_atoms(model_dir, tmp_path, capsys):
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(slab, "O", 1.8, "fcc")
    slab.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    slab.rattle(0.05, seed=0)
    ase.io.write(tmp_path / "slab.extxyz", slab)
    status = main(
        ["relax", str(tmp_path / "slab.extxyz"), "--model", str(model_dir), "--fmax", "0.05", "--steps", "200"]
    )
    out = capsys.readouterr().out
    assert "energy" in out and "max force" in out
    relaxed = ase.io.read(tmp_path / "slab-relaxed.extxyz")
    assert np.allclose(relaxed.positions[:4], slab.positions[:4])  # fixed atoms did not move
    assert status == (0 if "converged after" in out and "NOT" not in out else 1)


def test_relax_cell_lowers_the_stress(model_dir, tmp_path, capsys):
    start = bulk("Cu", "fcc", a=3.2)
    start.calc = zoo.calculator(zoo.load(model_dir))
    initial = np.abs(start.get_stress()).max()
    ase.io.write(tmp_path / "bulk.extxyz", start)
    arguments = ["relax", str(tmp_path / "bulk.extxyz"), "--model", str(model_dir), "--cell", "--fmax", "1e-4"]
    main([*arguments, "--steps", "100"])
    relaxed = ase.io.read(tmp_path / "bulk-relaxed.extxyz")
    assert np.abs(relaxed.get_stress()).max() < initial
    assert not np.allclose(relaxed.cell.lengths(), start.cell.lengths())


@pytest.mark.parametrize("ensemble", ["nve", "nvt-langevin"])
def test_md_writes_trajectory_and_log(model_dir, tmp_path, capsys, ensemble):
    ase.io.write(tmp_path / "bulk.extxyz", bulk("Cu", "fcc", a=3.6).repeat(2))
    trajectory = tmp_path / f"{ensemble}.traj"
    arguments = ["md", str(tmp_path / "bulk.extxyz"), "--model", str(model_dir), "--ensemble", ensemble]
    assert main([*arguments, "--steps", "40", "--dt", "0.5", "--interval", "10", "-o", str(trajectory)]) == 0
    assert len(ase.io.read(trajectory, index=":")) == 5
    assert trajectory.with_suffix(".log").read_text().count("\n") >= 5
    assert "total energy drift" in capsys.readouterr().out


def test_help_has_examples(capsys):
    for command in ("predict", "relax", "md"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"zoo {command}" in capsys.readouterr().out


def test_backend_option_gives_the_same_results(model_dir, tmp_path):
    """`--backend torch` (the fused kernels) writes the numbers of the model's own code; a model without a fused
    path is refused by name."""
    frames = [bulk("Cu", "fcc", a=3.6).repeat(2), bulk("Cu", "fcc", a=3.7)]
    for frame in frames:
        frame.rattle(0.05, seed=1)
    ase.io.write(tmp_path / "in.extxyz", frames)
    outputs = {}
    for backend in (None, "torch"):
        name = tmp_path / f"out-{backend}.extxyz"
        extra = [] if backend is None else ["--backend", backend]
        assert main(["predict", str(tmp_path / "in.extxyz"), "--model", str(model_dir), "-o", str(name), *extra]) == 0
        outputs[backend] = ase.io.read(name, index=":")
    for plain, fused in zip(outputs[None], outputs["torch"], strict=True):
        assert np.isclose(plain.get_potential_energy(), fused.get_potential_energy(), rtol=1e-5, atol=1e-6)
        assert np.allclose(plain.get_forces(), fused.get_forces(), rtol=1e-4, atol=1e-5)
    calc = zoo.calculator(model_dir, backend="torch", dtype=torch.float64)
    reference = zoo.calculator(model_dir, dtype=torch.float64)
    atoms = frames[0].copy()
    assert np.isclose(calc.get_potential_energy(atoms), reference.get_potential_energy(atoms.copy()), rtol=1e-12)
    segno = zoo.save_pretrained(zoo.create_model("segno-nbody", hidden_nf=8), tmp_path / "segno")
    with pytest.raises(zoo.kernels.KernelError, match="no fused message-passing path"):
        zoo.kernels.set_backend(zoo.load(segno), "torch")
