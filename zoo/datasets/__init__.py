"""Data sets and generators; the N-body simulations of the EGNN and SEGNO papers live in :mod:`zoo.datasets.nbody`."""

from zoo.datasets.nbody import (
    NBodyDataset,
    generate_nbody_dataset,
    nbody_file_name,
    simulate_charged,
    simulate_gravity,
)

__all__ = [
    "NBodyDataset",
    "generate_nbody_dataset",
    "nbody_file_name",
    "simulate_charged",
    "simulate_gravity",
]
