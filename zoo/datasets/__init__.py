"""Data sets and generators; the N-body simulations of the EGNN and SEGNO papers live in :mod:`zoo.datasets.nbody`."""

from zoo.datasets.ase_db import AseDBDataset, AseLmdbWriter
from zoo.datasets.ase_files import AseReadDataset, StreamingAseDataset
from zoo.datasets.base import (
    DatasetError,
    FrameError,
    LabelKeys,
    StructureDataset,
    atoms_to_graph,
    check_dataset,
)
from zoo.datasets.loaders import GraphBatchSampler, graph_sizes, make_loader, stream_batches
from zoo.datasets.md17 import MDTrajectoryDataset
from zoo.datasets.molecules import MoleculeFileDataset
from zoo.datasets.nbody import (
    NBodyDataset,
    generate_nbody_dataset,
    nbody_file_name,
    simulate_charged,
    simulate_gravity,
)
from zoo.datasets.oc20 import OC20LmdbDataset, UnsafePickleError
from zoo.datasets.point_clouds import ModelNet40, PointCloudFileDataset
from zoo.datasets.processed import MissingRawFilesError, ProcessedDataset
from zoo.datasets.qm9 import QM9, QM9_TARGETS, cormorant_split, random_split
from zoo.datasets.registry import list_datasets, load, register_dataset
from zoo.datasets.synthetic import random_structures
from zoo.datasets.tools import convert_to_aselmdb, inspect_dataset, open_dataset

__all__ = [
    "QM9",
    "QM9_TARGETS",
    "AseDBDataset",
    "AseLmdbWriter",
    "AseReadDataset",
    "DatasetError",
    "FrameError",
    "GraphBatchSampler",
    "LabelKeys",
    "MDTrajectoryDataset",
    "MissingRawFilesError",
    "ModelNet40",
    "MoleculeFileDataset",
    "NBodyDataset",
    "OC20LmdbDataset",
    "PointCloudFileDataset",
    "ProcessedDataset",
    "StreamingAseDataset",
    "StructureDataset",
    "UnsafePickleError",
    "atoms_to_graph",
    "check_dataset",
    "convert_to_aselmdb",
    "cormorant_split",
    "generate_nbody_dataset",
    "graph_sizes",
    "inspect_dataset",
    "list_datasets",
    "load",
    "make_loader",
    "nbody_file_name",
    "open_dataset",
    "random_split",
    "random_structures",
    "register_dataset",
    "simulate_charged",
    "simulate_gravity",
    "stream_batches",
]
