"""Geometry shared by the models, over e3nn: spherical harmonics, Wigner-D matrices, edge frames, radial
bases, cutoff envelopes and PCA frames."""

from zoo.geometry.edge_frame import edge_rotation_matrix, edge_wigner
from zoo.geometry.envelope import CosineCutoff, PolynomialEnvelope
from zoo.geometry.frames import DegenerateFramesWarning, frame_coordinates, pca_frames
from zoo.geometry.radial import BesselBasis, ExpNormalSmearing, GaussianRadialBasis, GaussianSmearing
from zoo.geometry.spherical import spherical_harmonics, wigner_D, wigner_D_blocks

__all__ = [
    "BesselBasis",
    "CosineCutoff",
    "DegenerateFramesWarning",
    "ExpNormalSmearing",
    "GaussianRadialBasis",
    "GaussianSmearing",
    "PolynomialEnvelope",
    "edge_rotation_matrix",
    "edge_wigner",
    "frame_coordinates",
    "pca_frames",
    "spherical_harmonics",
    "wigner_D",
    "wigner_D_blocks",
]
