"""Metrics: quality of generated molecules (:mod:`zoo.metrics.molecules`)."""

from zoo.metrics.molecules import (
    atom_stability,
    connectivity,
    edm_bond_orders,
    molecule_metrics,
    novelty,
    smiles,
    stability,
    uniqueness,
    validity,
)

__all__ = [
    "atom_stability",
    "connectivity",
    "edm_bond_orders",
    "molecule_metrics",
    "novelty",
    "smiles",
    "stability",
    "uniqueness",
    "validity",
]
