"""Layers shared by several model families: spherical-channel (SO(3)) layouts and linear maps, SO(2)
convolutions, S2-grid activations, equivariant norms, radial MLPs and graph reductions."""

from zoo.nn.graph_ops import segment_softmax
from zoo.nn.norm import (
    EquivariantLayerNorm,
    EquivariantLayerNormSH,
    EquivariantRMSNormSH,
    NormType,
    equivariant_norm,
)
from zoo.nn.s2 import GateActivation, S2Activation, S2Grid, SeparableS2Activation, SmoothLeakyReLU
from zoo.nn.so2 import RadialMLP, SO2Convolution, SO2OrderLinear
from zoo.nn.so3 import CoefficientLayout, EdgeRotation, SO3Linear, degree_index

__all__ = [
    "CoefficientLayout",
    "EdgeRotation",
    "EquivariantLayerNorm",
    "EquivariantLayerNormSH",
    "EquivariantRMSNormSH",
    "GateActivation",
    "NormType",
    "RadialMLP",
    "S2Activation",
    "S2Grid",
    "SO2Convolution",
    "SO2OrderLinear",
    "SO3Linear",
    "SeparableS2Activation",
    "SmoothLeakyReLU",
    "degree_index",
    "equivariant_norm",
    "segment_softmax",
]
