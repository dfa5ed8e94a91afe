"""N-body simulations of the EGNN and SEGNO papers: generators and a graph dataset.

Two systems, both in dimensionless simulation units (unit charge, unit mass, Coulomb/gravity constant 1):

- **charged** (EGNN, Satorras et al. 2021; vgsatorras/egnn ``n_body_system/dataset``): 5 particles with
  charges :math:`q_i = \\pm 1`, force :math:`\\vec F_i = \\sum_{j \\ne i} q_i q_j (\\vec r_i - \\vec r_j) /
  |\\vec r_i - \\vec r_j|^3`, every force component clipped to :math:`\\pm 100`, kick-drift integration with
  :math:`\\Delta t = 0.001`, reflecting walls at :math:`\\pm 5` applied to the initial state only.
- **gravity** (SEGNO, Liu et al. 2024, with the simulator of SEGNN, Brandstetter et al. 2022,
  RobDHess/Steerable-E3-GNN ``nbody/dataset``): 5 unit masses, softened gravity
  :math:`\\vec a_i = \\sum_j (\\vec r_j - \\vec r_i) / (|\\vec r_j - \\vec r_i|^2 + 0.1^2)^{3/2}`, velocity
  Verlet with :math:`\\Delta t = 0.001`, zero total momentum.

:func:`simulate_charged` and :func:`simulate_gravity` draw exactly the random numbers of the official
generators, in the same order (so a seed gives the official data set), and integrate all trajectories at once
with the same floating-point operations (the same numpy and BLAS calls per trajectory), so on a given machine
their arrays equal the official scripts' bit for bit. :func:`generate_nbody_dataset` writes the official
``.npy`` files and :class:`NBodyDataset` reads them (ours or the official ones) as :class:`zoo.graph.AtomsGraph`.

Frames: trajectories are stored every ``sample_freq`` steps. Charged frame ``k`` is step
``(k + 1) * sample_freq`` (the initial state is not stored), gravity frame ``k`` is step ``k * sample_freq``.
The EGNN protocol predicts charged frame 40 from frame 30 (1,000 steps); SEGNO also uses frames 45 and 50
(1,500 and 2,000 steps; frame 50 needs ``length >= 5200``) and gravity frames 0 -> 10, 15 or 20.

Example:
    >>> traj = simulate_charged(2, seed=43, length=1000)
    >>> traj.loc.shape, traj.vel.shape, traj.edges.shape, traj.charges.shape
    ((2, 9, 3, 5), (2, 9, 3, 5), (2, 5, 5), (2, 5, 1))
    >>> sorted(set(traj.charges.ravel().tolist()))
    [-1.0, 1.0]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.graph import AtomsGraph

__all__ = [
    "ChargedTrajectories",
    "GravityTrajectories",
    "NBodyDataset",
    "generate_nbody_dataset",
    "nbody_file_name",
    "simulate_charged",
    "simulate_gravity",
]

KINDS = ("charged", "gravity")
SPLITS = ("train", "valid", "test")
QUANTITIES = ("loc", "vel", "edges", "charges")
# Paper protocol (EGNN Sec. 5.1, SEGNO Sec. 5.1): models train on the first 3,000 training trajectories.
PROTOCOL_TRAIN_SAMPLES = 3000
# Input and target frame of each system for the 1,000-step task.
PROTOCOL_FRAMES = {"charged": (30, 40), "gravity": (0, 10)}

# Official ChargedParticlesSim constants.
_CHARGE_TYPES = np.array([-1.0, 0.0, 1.0])
_CHARGE_PROB = [1.0 / 2, 0, 1.0 / 2]
_CHARGED_DT = 0.001
_CHARGED_MAX_FORCE = 0.1 / _CHARGED_DT  # the official expression (exactly 100.0)
_BOX_SIZE = 5.0
_CHUNK = 1024  # trajectories integrated together: large enough to amortise numpy overhead, small enough for cache


class ChargedTrajectories(NamedTuple):
    """Charged-particle trajectories in the official file layout (float64, simulation units).

    Attributes:
        loc: ``[S, T, 3, n]`` positions; frame ``k`` is step ``(k + 1) * sample_freq``.
        vel: ``[S, T, 3, n]`` velocities at those frames (before that step's kick).
        edges: ``[S, n, n]`` charge products :math:`q_i q_j` (diagonal included).
        charges: ``[S, n, 1]`` charges, -1 or +1.
    """

    loc: np.ndarray
    vel: np.ndarray
    edges: np.ndarray
    charges: np.ndarray


class GravityTrajectories(NamedTuple):
    """Gravity trajectories in the official file layout (float64, simulation units).

    Attributes:
        loc: ``[S, T, n, 3]`` positions; frame ``k`` is step ``k * sample_freq`` (frame 0 = initial state).
        vel: ``[S, T, n, 3]`` velocities at those frames.
        forces: ``[S, T, n, 3]`` forces (acceleration times mass); saved as ``edges_*.npy`` like the official
            generator.
        mass: ``[S, n, 1]`` masses (all 1); saved as ``charges_*.npy`` like the official generator.
    """

    loc: np.ndarray
    vel: np.ndarray
    forces: np.ndarray
    mass: np.ndarray


def _random_state(seed: int | np.random.RandomState) -> np.random.RandomState:
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or a numpy RandomState, got {type(seed).__name__}.")
    return np.random.RandomState(seed)


def _num_frames(length: int, sample_freq: int, *, stores_initial: bool) -> int:
    if sample_freq < 1 or length < 1 or length % sample_freq:
        raise ValueError(
            f"length ({length}) must be a positive multiple of sample_freq ({sample_freq}), as in the official "
            "generator."
        )
    num_frames = length // sample_freq - (0 if stores_initial else 1)
    if num_frames < 1:
        raise ValueError(
            f"length={length} with sample_freq={sample_freq} stores no frame; the charged simulator stores steps "
            "sample_freq, 2 sample_freq, ... below length, so use length >= 2 * sample_freq."
        )
    return num_frames


def simulate_charged(
    num_trajectories: int,
    *,
    seed: int | np.random.RandomState,
    length: int = 5000,
    sample_freq: int = 100,
    n_balls: int = 5,
    initial_vel: bool = True,
) -> ChargedTrajectories:
    """Simulate charged-particle trajectories exactly like the official EGNN ``ChargedParticlesSim``.

    For each trajectory, in order, the draws are those of the official ``sample_trajectory``: ``n`` charges
    (``choice`` of -1/+1 with probability 1/2 each), positions ``randn(3, n) * loc_std`` with
    :math:`\\mathrm{loc\\_std} = (n/5)^{1/3}`, velocities ``randn(3, n)`` rescaled to speed 0.5 per particle
    (``1e-16`` if not ``initial_vel``), and, after the trajectory, the two zero-variance observation-noise arrays
    ``randn(T, 3, n)`` that the official code draws and multiplies by 0 (drawn here too, so that every later
    trajectory of the stream is the same). The initial state is reflected at the walls (box 5), then integrated
    with a kick-drift scheme, :math:`\\Delta t = 0.001`, forces clipped to :math:`\\pm 100` per component.

    Args:
        num_trajectories: number of trajectories ``S``.
        seed: an int (equivalent to ``np.random.seed(seed)`` in the official script) or a legacy
            :class:`numpy.random.RandomState` to continue (advanced in place), to draw consecutive sets from one
            stream.
        length: number of time steps ``L`` (official ``--length``).
        sample_freq: store every ``sample_freq`` steps.
        n_balls: number of particles ``n``.
        initial_vel: initial speed 0.5 if True, ``1e-16`` if False (official ``--initial_vel``).

    Returns:
        :class:`ChargedTrajectories` with ``T = L / sample_freq - 1`` frames.

    Example:
        >>> simulate_charged(1, seed=0, length=300, sample_freq=100).loc.shape
        (1, 2, 3, 5)
    """
    if num_trajectories < 0:
        raise ValueError(f"num_trajectories must be >= 0, got {num_trajectories}.")
    if n_balls < 2:
        raise ValueError(f"n_balls must be >= 2, got {n_balls}.")
    num_frames = _num_frames(length, sample_freq, stores_initial=False)
    rng = _random_state(seed)
    loc_std = 1.0 * (float(n_balls) / 5.0) ** (1 / 3)
    vel_norm = 0.5 if initial_vel else 1e-16

    charges = np.empty((num_trajectories, n_balls, 1))
    loc0 = np.empty((num_trajectories, 3, n_balls))
    vel0 = np.empty((num_trajectories, 3, n_balls))
    for index in range(num_trajectories):
        charges[index] = rng.choice(_CHARGE_TYPES, size=(n_balls, 1), p=_CHARGE_PROB)
        loc0[index] = rng.standard_normal((3, n_balls)) * loc_std
        vel0[index] = rng.standard_normal((3, n_balls))
        rng.standard_normal((num_frames, 3, n_balls))  # observation noise on loc, times noise_var = 0
        rng.standard_normal((num_frames, 3, n_balls))  # observation noise on vel, times noise_var = 0
    speed = np.sqrt((vel0**2).sum(axis=1))[:, None, :]  # [S, 1, n]
    vel0 = vel0 * vel_norm / speed
    _reflect_at_walls(loc0, vel0)
    edges = charges * charges.transpose(0, 2, 1)  # [S, n, n]; the official charges.dot(charges.T) with k = 1

    loc = np.empty((num_trajectories, num_frames, 3, n_balls))
    vel = np.empty((num_trajectories, num_frames, 3, n_balls))
    for start in range(0, num_trajectories, _CHUNK):
        part = slice(start, start + _CHUNK)
        loc[part], vel[part] = _integrate_charged(loc0[part], vel0[part], edges[part], num_frames, sample_freq)
    return ChargedTrajectories(loc=loc, vel=vel, edges=edges, charges=charges)


def _reflect_at_walls(loc: np.ndarray, vel: np.ndarray) -> None:
    """The official ``_clamp`` of the initial state, in place: reflect positions beyond :math:`\\pm 5` back into
    the box and point their velocity components inwards."""
    over = loc > _BOX_SIZE
    loc[over] = 2 * _BOX_SIZE - loc[over]
    vel[over] = -np.abs(vel[over])
    under = loc < -_BOX_SIZE
    loc[under] = -2 * _BOX_SIZE - loc[under]
    vel[under] = np.abs(vel[under])


def _charged_forces(loc: np.ndarray, charge_products: np.ndarray) -> np.ndarray:
    """Clipped Coulomb forces ``[3, n, B]`` of positions ``loc [3, n, B]`` (trajectories last, so that numpy
    loops run over the batch), with the official floating-point operations.

    ``charge_products`` ``[n, n, B]`` is :math:`q_i q_j` times the interaction strength. The sums are spelled out
    in the order of numpy's reductions in the official code. ``X^T X`` (``X`` = ``[3, n]``) goes
    through ``np.matmul`` of each trajectory's matrix with its own transpose, i.e. the same BLAS ``syrk`` call as
    the official ``A.dot(A.T)`` (OpenBLAS rounds it with fused multiply-adds, which numpy cannot spell out).
    """
    num_balls = loc.shape[1]
    sq_norm = (loc[0] ** 2 + loc[1] ** 2) + loc[2] ** 2  # [n, B]
    per_trajectory = np.ascontiguousarray(loc.transpose(2, 0, 1))  # [B, 3, n]
    gram = np.matmul(per_trajectory.transpose(0, 2, 1), per_trajectory).transpose(1, 2, 0)  # [n, n, B]
    sq_dist = sq_norm[:, None] + sq_norm[None, :] - 2 * gram  # [n, n, B], |r_i - r_j|^2
    with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal, zeroed below as in the official code
        force_size = charge_products / np.power(sq_dist, 3.0 / 2.0)  # q_i q_j / |r_ij|^3
    diagonal = np.arange(num_balls)
    force_size[diagonal, diagonal] = 0

    def term(source: int) -> np.ndarray:  # [3, n, B], size_ij (r_i - r_j) for source j
        return force_size[:, source] * (loc - loc[:, source : source + 1])

    forces = _numpy_sum_order(term, 0, num_balls)  # [3, n, B]
    return np.clip(forces, -_CHARGED_MAX_FORCE, _CHARGED_MAX_FORCE, out=forces)


def _numpy_sum_order(term: Callable[[int], np.ndarray], start: int, count: int) -> np.ndarray:
    """``term(start) + ... + term(start + count - 1)`` added in the order of numpy's pairwise summation along a
    contiguous axis (``sum(axis=-1)``): left to right below 8 terms, else 8 interleaved partial sums (recursively
    halved above 128 terms), so that the result equals the official ``.sum(axis=-1)`` bit for bit."""
    if count < 8:
        total = term(start)
        for index in range(start + 1, start + count):
            total = total + term(index)
        return total
    if count <= 128:
        partial = [term(start + lane) for lane in range(8)]
        stop = start + count - count % 8
        for block in range(start + 8, stop, 8):
            for lane in range(8):
                partial[lane] = partial[lane] + term(block + lane)
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7])
        )
        for index in range(stop, start + count):
            total = total + term(index)
        return total
    half = count // 2
    half -= half % 8
    return _numpy_sum_order(term, start, half) + _numpy_sum_order(term, start + half, count - half)


def _integrate_charged(
    loc0: np.ndarray, vel0: np.ndarray, edges: np.ndarray, num_frames: int, sample_freq: int
) -> tuple[np.ndarray, np.ndarray]:
    """Kick-drift integration of ``B`` trajectories from ``loc0, vel0 [B, 3, n]``; returns ``[B, T, 3, n]``."""
    loc = np.ascontiguousarray(loc0.transpose(1, 2, 0))  # [3, n, B]
    vel = np.ascontiguousarray(vel0.transpose(1, 2, 0))
    loc_frames = np.empty((loc0.shape[0], num_frames, *loc0.shape[1:]))
    vel_frames = np.empty_like(loc_frames)
    charge_products = np.ascontiguousarray((1.0 * edges).transpose(1, 2, 0))  # interaction strength 1; [n, n, B]
    vel += _CHARGED_DT * _charged_forces(loc, charge_products)
    last_step = num_frames * sample_freq  # later steps change no stored frame
    for step in range(1, last_step + 1):
        loc += _CHARGED_DT * vel
        if step % sample_freq == 0:
            frame = step // sample_freq - 1
            loc_frames[:, frame] = loc.transpose(2, 0, 1)
            vel_frames[:, frame] = vel.transpose(2, 0, 1)
        if step < last_step:
            vel += _CHARGED_DT * _charged_forces(loc, charge_products)
    return loc_frames, vel_frames


def simulate_gravity(
    num_trajectories: int,
    *,
    seed: int | np.random.RandomState,
    length: int = 5000,
    sample_freq: int = 100,
    n_balls: int = 5,
    dt: float = 0.001,
    softening: float = 0.1,
    interaction_strength: float = 1.0,
) -> GravityTrajectories:
    """Simulate gravitational trajectories exactly like SEGNN's ``GravitySim`` as SEGNO's data set uses it.

    For each trajectory, in order: positions ``randn(n, 3)``, velocities ``randn(n, 3)`` shifted to zero total
    momentum (unit masses), and after the trajectory the three zero-variance observation-noise arrays
    ``randn(T, n, 3)`` (positions, velocities, forces) that the official code draws and multiplies by 0.
    Integration: velocity Verlet (half kick, drift, new acceleration, half kick) with softened gravity.

    Args:
        num_trajectories: number of trajectories ``S``.
        seed: an int (equivalent to ``np.random.seed(seed)``) or a legacy :class:`numpy.random.RandomState` to
            continue (advanced in place).
        length: number of time steps ``L``.
        sample_freq: store every ``sample_freq`` steps, starting with the initial state.
        n_balls: number of particles ``n`` (the SEGNO data set: 5).
        dt: time step.
        softening: softening length :math:`\\epsilon` of :math:`(r^2 + \\epsilon^2)^{-3/2}`.
        interaction_strength: gravitational constant :math:`G`.

    Returns:
        :class:`GravityTrajectories` with ``T = L / sample_freq`` frames.

    Example:
        >>> traj = simulate_gravity(1, seed=0, length=300, sample_freq=100)
        >>> traj.loc.shape, bool(abs(traj.vel[0, -1].sum(axis=0)).max() < 1e-12)
        ((1, 3, 5, 3), True)
    """
    if num_trajectories < 0:
        raise ValueError(f"num_trajectories must be >= 0, got {num_trajectories}.")
    if n_balls < 1:
        raise ValueError(f"n_balls must be >= 1, got {n_balls}.")
    num_frames = _num_frames(length, sample_freq, stores_initial=True)
    rng = _random_state(seed)
    mass = np.ones((n_balls, 1))

    pos0 = np.empty((num_trajectories, n_balls, 3))
    vel0 = np.empty((num_trajectories, n_balls, 3))
    for index in range(num_trajectories):
        pos0[index] = rng.standard_normal((n_balls, 3))
        vel0[index] = rng.standard_normal((n_balls, 3))
        for _ in range(3):  # observation noise on positions, velocities and forces, times noise_var = 0
            rng.standard_normal((num_frames, n_balls, 3))
    vel0 -= np.mean(mass * vel0, axis=1, keepdims=True) / np.mean(mass)  # centre-of-mass frame

    shape = (num_trajectories, num_frames, n_balls, 3)
    loc, vel, forces = np.empty(shape), np.empty(shape), np.empty(shape)
    for start in range(0, num_trajectories, _CHUNK):
        part = slice(start, start + _CHUNK)
        loc[part], vel[part], forces[part] = _integrate_gravity(
            pos0[part], vel0[part], mass, num_frames, sample_freq, dt, softening**2, interaction_strength
        )
    return GravityTrajectories(
        loc=loc, vel=vel, forces=forces, mass=np.broadcast_to(mass, (num_trajectories, *mass.shape)).copy()
    )


def _gravity_acceleration(coords: np.ndarray, mass: np.ndarray, strength: float, softening_sq: float) -> np.ndarray:
    """Softened gravitational accelerations ``[3, n, B]`` of positions ``coords [3, n, B]`` (trajectories last),
    with the official floating-point operations; the sum over sources is the same BLAS ``gemv`` with the mass
    vector per trajectory and Cartesian component as the official ``(dx * inv_r3) @ mass``."""
    separation = coords[:, None, :, :] - coords[:, :, None, :]  # [3, n, n, B], r_j - r_i
    inv_r3 = separation[0] ** 2 + separation[1] ** 2 + separation[2] ** 2 + softening_sq  # [n, n, B]
    with np.errstate(divide="ignore"):  # zero distances without softening stay 0, as in the official code
        inv_r3 = np.where(inv_r3 > 0, inv_r3 ** (-1.5), inv_r3)
    weighted = strength * (separation * inv_r3)  # [3, n, n, B]
    per_trajectory = np.ascontiguousarray(weighted.transpose(3, 0, 1, 2))  # [B, 3, n, n], C order as official
    return (per_trajectory @ mass)[..., 0].transpose(1, 2, 0)  # [3, n, B]


def _integrate_gravity(
    pos0: np.ndarray,
    vel0: np.ndarray,
    mass: np.ndarray,
    num_frames: int,
    sample_freq: int,
    dt: float,
    softening_sq: float,
    strength: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity-Verlet integration of ``B`` trajectories from ``pos0, vel0 [B, n, 3]``; returns three
    ``[B, T, n, 3]`` arrays: positions, velocities, forces."""
    pos = np.ascontiguousarray(pos0.transpose(2, 1, 0))  # [3, n, B]
    vel = np.ascontiguousarray(vel0.transpose(2, 1, 0))
    mass_column = mass[:, 0, None]  # [n, 1], broadcasts against [3, n, B]
    shape = (pos0.shape[0], num_frames, *pos0.shape[1:])
    pos_frames, vel_frames, force_frames = np.empty(shape), np.empty(shape), np.empty(shape)
    acceleration = _gravity_acceleration(pos, mass, strength, softening_sq)
    last_step = (num_frames - 1) * sample_freq  # later steps change no stored frame
    for step in range(last_step + 1):
        if step % sample_freq == 0:
            frame = step // sample_freq
            pos_frames[:, frame] = pos.transpose(2, 1, 0)
            vel_frames[:, frame] = vel.transpose(2, 1, 0)
            force_frames[:, frame] = (acceleration * mass_column).transpose(2, 1, 0)
        if step == last_step:
            break
        vel += acceleration * dt / 2.0
        pos += vel * dt
        acceleration = _gravity_acceleration(pos, mass, strength, softening_sq)
        vel += acceleration * dt / 2.0
    return pos_frames, vel_frames, force_frames


def nbody_file_name(
    quantity: str,
    split: str,
    *,
    kind: str = "charged",
    n_balls: int = 5,
    initial_vel: bool = True,
    suffix: str = "small",
) -> str:
    """Name of one official ``.npy`` file, e.g. ``loc_train_charged5_initvel1small.npy``.

    Args:
        quantity: ``"loc"``, ``"vel"``, ``"edges"`` (gravity: forces) or ``"charges"`` (gravity: masses).
        split: ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``.
        kind: ``"charged"`` or ``"gravity"``.
        n_balls: number of particles.
        initial_vel: the official ``--initial_vel`` flag (``initvel1`` / ``initvel0``).
        suffix: the official ``--sufix``/``--suffix``; ``"small"`` for the EGNN/SEGNO paper sets.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; choose one of {QUANTITIES}.")
    return f"{quantity}_{_split_name(split)}_{_kind(kind)}{n_balls}_initvel{int(initial_vel)}{suffix}.npy"


def _split_name(split: str) -> str:
    name = "valid" if split == "val" else split
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS} (or 'val').")
    return name


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose 'charged' (EGNN) or 'gravity' (SEGNO).")
    return kind


def generate_nbody_dataset(
    root: str | os.PathLike[str],
    *,
    kind: str = "charged",
    seed: int = 43,
    num_train: int = 10_000,
    num_valid: int = 2_000,
    num_test: int = 2_000,
    length: int = 5000,
    length_test: int = 5000,
    sample_freq: int = 100,
    n_balls: int = 5,
    initial_vel: bool = True,
    suffix: str = "small",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write an N-body data set as the official ``generate_dataset.py`` does: same files, names and layout.

    The train, valid and test trajectories are drawn consecutively from one stream seeded with ``seed``
    (defaults: the paper set, ``--num-train 10000 --seed 43 --sufix small``: 10,000 / 2,000 / 2,000 trajectories
    of 5,000 steps). Files, per split ``s``, with ``S`` trajectories, ``T`` frames and ``n`` particles:

    - charged: ``loc_s_charged5_initvel1small.npy`` and ``vel_*`` ``[S, T, 3, n]``, ``edges_*`` ``[S, n, n]``
      (:math:`q_i q_j`), ``charges_*`` ``[S, n, 1]``;
    - gravity: ``loc_*``, ``vel_*`` ``[S, T, n, 3]``, ``edges_*`` ``[S, T, n, 3]`` (forces), ``charges_*``
      ``[S, n, 1]`` (masses), with ``gravity`` in the names.

    Writing is atomic per data set: every file is first written into a temporary folder inside ``root`` and only
    moved into place once all are complete, so an interrupted run leaves no partial file under a final name.

    Args:
        root: folder to write to (created if needed).
        kind: ``"charged"`` (EGNN) or ``"gravity"`` (SEGNO).
        seed: seed of the stream (``np.random.seed(seed)`` in the official script).
        num_train: number of training trajectories.
        num_valid: number of validation trajectories.
        num_test: number of test trajectories.
        length: steps per training and validation trajectory.
        length_test: steps per test trajectory.
        sample_freq: store every ``sample_freq`` steps.
        n_balls: number of particles.
        initial_vel: charged only: initial speed 0.5 (True) or ``1e-16`` (False); part of the file names.
        suffix: the name suffix (official ``--sufix``).
        overwrite: replace existing files; if False, an existing file raises before anything is simulated.

    Returns:
        ``{file name without .npy: path}`` of the 12 files written.

    Raises:
        FileExistsError: a file exists and ``overwrite`` is False.
    """
    kind = _kind(kind)
    root = Path(root)
    names = {
        (quantity, split): nbody_file_name(
            quantity, split, kind=kind, n_balls=n_balls, initial_vel=initial_vel, suffix=suffix
        )
        for split in SPLITS
        for quantity in QUANTITIES
    }
    if not overwrite:
        existing = [name for name in names.values() if (root / name).exists()]
        if existing:
            raise FileExistsError(
                f"{root / existing[0]} already exists ({len(existing)} of the 12 files); pass overwrite=True to "
                "replace them or choose another root."
            )
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    counts = {"train": (num_train, length), "valid": (num_valid, length), "test": (num_test, length_test)}
    staging = Path(tempfile.mkdtemp(prefix=".nbody-", dir=root))
    try:
        for split, (count, steps) in counts.items():
            if kind == "charged":
                arrays = tuple(
                    simulate_charged(
                        count, seed=rng, length=steps, sample_freq=sample_freq, n_balls=n_balls, initial_vel=initial_vel
                    )
                )
            else:
                arrays = tuple(
                    simulate_gravity(count, seed=rng, length=steps, sample_freq=sample_freq, n_balls=n_balls)
                )
            for quantity, array in zip(QUANTITIES, arrays, strict=True):
                np.save(staging / names[quantity, split], array)
        written = {}
        for name in names.values():
            os.replace(staging / name, root / name)
            written[name.removesuffix(".npy")] = root / name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


class NBodyDataset(Dataset):
    """N-body trajectories as graphs: predict the positions at frame ``frame_T`` from the state at ``frame_0``.

    Reads the official ``.npy`` files (written by :func:`generate_nbody_dataset` or by the official scripts)
    from ``root``. Each item is an :class:`~zoo.graph.AtomsGraph` of one trajectory with ``n`` particles and
    every ordered pair as an edge (no self-loops), in float ``dtype``, simulation units:

    - ``pos`` ``[n, 3]``: positions at ``frame_0``.
    - ``vel`` ``[n, 3]``: velocities at ``frame_0``.
    - ``pos_target`` ``[n, 3]``: positions at ``frame_T`` (the regression target).
    - ``charges`` ``[n, 1]`` (charged) or ``mass`` ``[n, 1]`` (gravity): per-particle charges or masses (from
      ``charges_*.npy``; for gravity, unit masses if that file is absent, as SEGNO's loader reads only ``loc_*``
      and ``vel_*``).
    - ``edge_index`` ``[2, n (n - 1)]``: row 0 = source :math:`j`, row 1 = target :math:`i`, ordered by target
      then source as the official loader; ``edge_shift`` ``[E, 3]`` zeros (not periodic).
    - ``edge_attr`` ``[E, 1]`` (charged only): :math:`q_i q_j` from ``edges_*.npy``, the official edge attribute.
    - ``cell`` zeros, ``pbc`` False, ``natoms`` ``[1]``.

    Args:
        root: folder with the ``.npy`` files.
        split: ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``.
        kind: ``"charged"`` (EGNN) or ``"gravity"`` (SEGNO).
        max_samples: use the first ``max_samples`` trajectories. ``None``: the paper protocol, the first 3,000
            for ``train`` and all for ``valid``/``test``.
        frame_0: input frame; ``None``: 30 (charged) or 0 (gravity).
        frame_T: target frame; ``None``: 40 (charged) or 10 (gravity). SEGNO's 1,500/2,000-step tasks use 45/50
            (charged) and 15/20 (gravity).
        n_balls: number of particles in the file names.
        initial_vel: the ``initvel`` flag in the file names.
        suffix: the suffix in the file names.
        dtype: float dtype of the tensors (the official loaders use float32).

    Raises:
        FileNotFoundError: a file is missing (the message says how to generate it).
        ValueError: a file is unreadable or has an unexpected shape, a frame is out of range, or the positions or
            velocities used hold NaN or inf.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = generate_nbody_dataset(root, num_train=4, num_valid=2, num_test=2, length=500)
        >>> data = NBodyDataset(root, "train", frame_0=1, frame_T=3)
        >>> graph = data[0]
        >>> len(data), graph.pos.shape, graph.edge_index.shape, graph.edge_attr.shape
        (4, torch.Size([5, 3]), torch.Size([2, 20]), torch.Size([20, 1]))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        kind: str = "charged",
        max_samples: int | None = None,
        frame_0: int | None = None,
        frame_T: int | None = None,
        n_balls: int = 5,
        initial_vel: bool = True,
        suffix: str = "small",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.kind = _kind(kind)
        self.split = _split_name(split)
        self.root = Path(root)
        default_0, default_T = PROTOCOL_FRAMES[self.kind]
        self.frame_0 = default_0 if frame_0 is None else int(frame_0)
        self.frame_T = default_T if frame_T is None else int(frame_T)
        if max_samples is None:
            max_samples = PROTOCOL_TRAIN_SAMPLES if self.split == "train" else None
        elif max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
        self.max_samples = max_samples

        def path(quantity: str) -> Path:
            name = nbody_file_name(
                quantity, self.split, kind=self.kind, n_balls=n_balls, initial_vel=initial_vel, suffix=suffix
            )
            return self.root / name

        self.files: list[Path] = [path("loc"), path("vel")]  # every file read, for provenance (hashes in cards)
        loc = self._load(path("loc"))
        vel = self._load(path("vel"))
        if loc.ndim != 4 or loc.shape[2 if self.kind == "charged" else 3] != 3:
            layout = "[S, T, 3, n]" if self.kind == "charged" else "[S, T, n, 3]"
            raise ValueError(
                f"{path('loc')} has shape {list(loc.shape)}, expected {layout} for {self.kind} trajectories; "
                f"if it holds {'gravity' if self.kind == 'charged' else 'charged'} trajectories, pass that kind."
            )
        if vel.shape != loc.shape:
            raise ValueError(
                f"{path('vel')} has shape {list(vel.shape)}, expected {list(loc.shape)} like {path('loc')}."
            )
        num_trajectories, num_frames = loc.shape[:2]
        num_balls = loc.shape[3] if self.kind == "charged" else loc.shape[2]
        if self.kind == "gravity" and not path("charges").is_file():  # SEGNO's loader reads loc and vel only
            per_particle = np.ones((num_trajectories, num_balls, 1))  # GravitySim's unit masses
        else:
            per_particle = self._load(path("charges"))
            self.files.append(path("charges"))
        if per_particle.shape != (num_trajectories, num_balls, 1):
            raise ValueError(
                f"{path('charges')} has shape {list(per_particle.shape)}, expected "
                f"{[num_trajectories, num_balls, 1]} to match {path('loc')}."
            )
        for name, frame in (("frame_0", self.frame_0), ("frame_T", self.frame_T)):
            if not 0 <= frame < num_frames:
                if self.kind == "charged":
                    step, needed = "(k + 1) * sample_freq; the initial state is not stored", "(frame + 2)"
                else:
                    step, needed = "k * sample_freq", "(frame + 1)"
                raise ValueError(
                    f"{name}={frame} is out of range for {path('loc')}, which has {num_frames} frames (0.."
                    f"{num_frames - 1}; frame k is step {step}); pick a frame in "
                    f"range or generate longer trajectories (length >= {needed} * sample_freq)."
                )
        count = num_trajectories if self.max_samples is None else min(self.max_samples, num_trajectories)
        loc = np.array(loc[:count, [self.frame_0, self.frame_T]])  # [S, 2, 3, n] or [S, 2, n, 3], off the memory map
        vel = np.array(vel[:count, self.frame_0])
        if self.kind == "charged":
            loc, vel = loc.swapaxes(-1, -2), vel.swapaxes(-1, -2)  # official transpose: [.., 3, n] -> [.., n, 3]
        self._pos = torch.tensor(loc[:, 0], dtype=dtype)  # [S, n, 3]
        self._pos_target = torch.tensor(loc[:, 1], dtype=dtype)  # [S, n, 3]
        self._vel = torch.tensor(vel, dtype=dtype)  # [S, n, 3]
        self._per_particle = torch.tensor(np.array(per_particle[:count]), dtype=dtype)  # [S, n, 1]

        target, source = (index.ravel() for index in np.nonzero(~np.eye(num_balls, dtype=bool)))
        self._edge_index = torch.as_tensor(np.stack([source, target]), dtype=torch.long)  # [2, E]
        self._edge_shift = torch.zeros(self._edge_index.shape[1], 3, dtype=torch.long)
        self._edge_attr = None
        if self.kind == "charged":
            edges = self._load(path("edges"))
            self.files.append(path("edges"))
            if edges.shape != (num_trajectories, num_balls, num_balls):
                raise ValueError(
                    f"{path('edges')} has shape {list(edges.shape)}, expected "
                    f"{[num_trajectories, num_balls, num_balls]} to match {path('loc')}."
                )
            edge_attr = np.array(edges[:count, target, source])[..., None]  # [S, E, 1], q_i q_j
            self._edge_attr = torch.as_tensor(edge_attr, dtype=dtype)

        finite = torch.isfinite(torch.cat([self._pos, self._pos_target, self._vel], dim=1)).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            raise ValueError(
                f"{path('loc')} or {path('vel')} holds NaN or inf at frames {self.frame_0}/{self.frame_T} of "
                f"trajectories {bad[:10].tolist()}; regenerate the data set."
            )
        # Items are built without re-validation (the validated constructor costs ~0.4 ms per item); the first
        # one goes through AtomsGraph.build, which checks every field of the layout they all share.
        self._cell = torch.zeros(1, 3, 3, dtype=dtype)
        self._pbc = torch.zeros(1, 3, dtype=torch.bool)
        self._natoms = torch.tensor([num_balls])
        if count:
            AtomsGraph.build(self._pos[0], **self._fields(0))

    def _fields(self, index: int) -> dict[str, torch.Tensor]:
        """Fields of item ``index`` besides ``pos``, ``cell``, ``pbc`` and ``natoms``."""
        fields = {
            "vel": self._vel[index],
            "pos_target": self._pos_target[index],
            "charges" if self.kind == "charged" else "mass": self._per_particle[index],
            "edge_index": self._edge_index.clone(),
            "edge_shift": self._edge_shift.clone(),
        }
        if self._edge_attr is not None:
            fields["edge_attr"] = self._edge_attr[index]
        return fields

    def _load(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise FileNotFoundError(
                f"N-body file {path} not found. Generate the data set with "
                f"zoo.datasets.generate_nbody_dataset({str(self.root)!r}, kind={self.kind!r}) (the paper set: "
                "seed 43, 10,000/2,000/2,000 trajectories), or copy the official .npy files into that folder."
            )
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable .npy array ({error}); regenerate it.") from error

    def __len__(self) -> int:
        return self._pos.shape[0]

    def __getitem__(self, index: int) -> AtomsGraph:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} trajectories.")
        return AtomsGraph(
            pos=self._pos[index],
            cell=self._cell.clone(),
            pbc=self._pbc.clone(),
            natoms=self._natoms.clone(),
            **self._fields(index),
        )
