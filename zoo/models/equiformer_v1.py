r"""Equiformer: equivariant graph attention transformer on irreps features (Liao and Smidt, ICLR 2023).

Node features are direct sums of irreducible representations (e3nn ``Irreps``, e.g. ``128x0e+64x1e+32x2e``),
stored flat as e3nn does: for each entry ``mul x (l, p)`` its ``mul`` copies of :math:`2l+1` components.
One layer (:class:`TransBlock`) is

.. math::

    x' = x + \mathrm{Proj}\Big(\sum_{j} \alpha_{ij}\, v_{ij}\Big)(\mathrm{LN}_1 x), \qquad
    x'' = x' + \mathrm{FFN}(\mathrm{LN}_2 x')

with the equivariant layer norm :class:`IrrepsLayerNorm`, values :math:`v_{ij}` from a depth-wise tensor
product of :math:`W_s x_j + W_d x_i` with the edge's spherical harmonics :math:`Y(\hat r_{ij})` whose weights
are an MLP of the radial basis (:class:`DepthwiseTensorProduct`, :class:`RadialProfile`), followed (non-linear
messages) by a gate and a second depth-wise product, and attention weights
:math:`\alpha_{ij} = \mathrm{softmax}_j\, a^\top \sigma(s_{ij})` from the scalars :math:`s_{ij}` of the first
product. The initial features are an element embedding plus an edge-degree embedding
:math:`\frac{1}{\sqrt{\bar d}}\sum_j \mathrm{DTP}(1, Y(\hat r_{ij}); \phi(r_{ij}))`, and the read-out is
:math:`\frac{1}{\sqrt{\bar n}}\sum_i \mathrm{MLP}(\mathrm{LN}(x_i))` (both divide by the *square root* of the
average degree :math:`\bar d` and of the average number of nodes :math:`\bar n`, as the official code does).

The arithmetic follows the official code (atomicarchitects/equiformer, e3nn 0.4.4) operation by operation:
e3nn's tensor-product normalisation with ``path_normalization='none'`` (a path into degree :math:`l_{out}`
carries :math:`\sqrt{2 l_{out} + 1}\, C^{l_{out}}_{l_1 l_2}`), linear maps without path normalisation and
weights drawn :math:`\mathcal N(0, 1/\mathrm{fan\_in})`, activations rescaled to unit second moment
(``e3nn.math.normalize2mom``), the learnable Gaussian / exponential-normal / Bessel radial bases and the
statistics of each configuration. Tensor products are computed here from e3nn's Clebsch-Gordan coefficients
(``o3.wigner_3j``) with no stored constants, so a state dict holds learnable weights (and the exp-normal
basis' buffers) only; :func:`zoo.converters.equiformer_v1.convert_state_dict` maps the official names
(``x.tp.weight`` -> ``x.weight``, ``x.bias.0`` -> ``x.bias``) and drops e3nn's internals.

Outputs: property models return ``{target: [B]}`` (:math:`y \sigma + \mu`); potentials (MD17) return
``{"energy", "energies", "forces"}`` with conservative forces :math:`-\partial E / \partial x`
(:func:`zoo.nn.conservative.conservative_outputs`); the OC20 IS2RE model with ``auxiliary_head`` also returns
``relaxed_displacement [N, 3]`` (the IS2RS "noisy nodes" head: predicted relaxed minus initial position, Å).

Parity: ``1e`` vectors with SH irreps ``1x0e+1x1e+...`` (the official choice) make a model equivariant to
rotations (SE(3)) but not reflections; irreps with odd parities (``1x0e+1x1o+1x2e``) give the E(3) variant.

Registered architectures: ``equiformer_v1`` (any configuration), ``equiformer_v1-qm9`` (3,531,715
parameters), ``equiformer_v1-qm9-bessel`` (3,477,705), ``equiformer_v1-md17-l2`` (3,496,001),
``equiformer_v1-md17-l3`` (5,500,865), ``equiformer_v1-oc20-is2re`` (6 blocks, 9,123,331) and
``equiformer_v1-oc20-is2re-18l`` (18 blocks with the auxiliary head, 26,773,379) — the official counts.

Example:
    >>> import torch, zoo
    >>> from zoo.testing import molecule_graph
    >>> model = zoo.create_model("equiformer_v1", irreps_node_embedding="8x0e+4x1e", num_layers=1,
    ...     irreps_sh="1x0e+1x1e", number_of_basis=8, fc_neurons=[8], irreps_feature="16x0e",
    ...     irreps_head="4x0e+2x1e", num_heads=2, irreps_mlp_mid="8x0e+4x1e").double()
    >>> model(molecule_graph(elements=(1, 6, 8)))["y"].shape
    torch.Size([1])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry import (
    BesselBasis,
    ExpNormalSmearing,
    GaussianRadialBasis,
    PolynomialEnvelope,
    spherical_harmonics,
)
from zoo.graph import GraphError, edge_vectors, node_graph_index, num_graphs
from zoo.nn import segment_softmax
from zoo.nn.conservative import conservative_outputs
from zoo.registry import register_model

__all__ = [
    "DepthwiseTensorProduct",
    "EdgeDegreeEmbedding",
    "EquiformerV1",
    "FeedForwardNetwork",
    "Gate",
    "GraphAttention",
    "IrrepsLayerNorm",
    "IrrepsLinear",
    "RadialProfile",
    "TransBlock",
]

# Dataset statistics fixed in the official code (cutoff 5 A).
QM9_AVG_NUM_NODES = 18.03065905448718
QM9_AVG_DEGREE = 15.57930850982666
OC20_AVG_NUM_NODES = 77.81317
OC20_AVG_DEGREE = 23.395238876342773  # IS2RE 100k, max 100 neighbours: the value the official code uses
QM9_ELEMENTS = (1, 6, 7, 8, 9)
# The Clebsch-Gordan coefficients of e3nn <= 0.4 (with which Equiformer was trained) and e3nn >= 0.5 (computed
# through the complex basis) differ in sign for these couplings (any order of the three degrees), found by
# comparing e3nn 0.4.4 and 0.6 for every coupling up to degree 8; all others agree.
_E3NN_04_NEGATED = frozenset(
    {
        (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 5, 5), (1, 6, 6), (1, 7, 7), (1, 8, 8), (3, 4, 6), (3, 5, 7),
        (3, 6, 8), (4, 4, 5), (4, 5, 6), (4, 6, 7), (4, 7, 8), (5, 5, 5), (5, 6, 6), (5, 7, 7), (5, 8, 8),
    }
)  # fmt: skip
_MAX_COUPLING_DEGREE = 8
BasisType = Literal["gaussian", "bessel", "exp"]
Task = Literal["property", "potential"]
_SCALAR = o3.Irrep("0e")


# ------------------------------------------------------------------------------------------------ irreps
def _irreps(value: str | o3.Irreps, name: str) -> o3.Irreps:
    """Parse irreps with an error that names the argument."""
    try:
        return o3.Irreps(value)
    except (ValueError, AssertionError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a valid irreps string: {exc}") from None


def sort_even_first(irreps: o3.Irreps) -> tuple[o3.Irreps, list[int]]:
    """Irreps sorted by degree, even parity first (stable), and where each old entry went (``new[p[i]] = old[i]``)."""
    order = sorted(range(len(irreps)), key=lambda i: (irreps[i].ir.l, -irreps[i].ir.p, i))
    position = [0] * len(order)
    for new, old in enumerate(order):
        position[old] = new
    return o3.Irreps([irreps[i] for i in order]), position


def _scalar_count(irreps: o3.Irreps) -> int:
    """Number of ``0e`` channels."""
    return sum(mul for mul, ir in irreps if ir == _SCALAR)


def _blocks(x: Tensor, irreps: o3.Irreps) -> list[Tensor]:
    """``[..., dim]`` -> one ``[..., mul, 2l+1]`` view per entry of ``irreps``."""
    return [x[..., s].reshape(*x.shape[:-1], mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps, strict=True)]


def coupling_e3nn_04(l1: int, l2: int, l3: int) -> Tensor:
    r"""e3nn 0.4's Clebsch-Gordan tensor :math:`C^{l_3}_{l_1 l_2}` ``[2l1+1, 2l2+1, 2l3+1]`` (float64), from
    ``o3.wigner_3j`` of the installed e3nn with the sign convention of e3nn 0.4."""
    if max(l1, l2, l3) > _MAX_COUPLING_DEGREE:
        raise ValueError(f"degrees above {_MAX_COUPLING_DEGREE} are not supported (got {l1}, {l2}, {l3})")
    sign = -1.0 if tuple(sorted((l1, l2, l3))) in _E3NN_04_NEGATED else 1.0
    return sign * o3.wigner_3j(l1, l2, l3, dtype=torch.float64)


@functools.cache
def _second_moment_scale(name: str) -> float:
    """e3nn's ``normalize2mom`` factor :math:`\\langle f(z)^2 \\rangle^{-1/2}`, :math:`z \\sim \\mathcal N(0, 1)`."""
    function = _ACTIVATIONS[name]
    return normalize2mom(function).cst


def _smooth_leaky_relu(x: Tensor, slope: float = 0.2) -> Tensor:
    r""":math:`\frac{1+a}{2} x + \frac{1-a}{2} x (2\sigma(x) - 1)` with :math:`a = 0.2`."""
    return 0.5 * (1 + slope) * x + 0.5 * (1 - slope) * x * (2 * torch.sigmoid(x) - 1)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "smooth_leaky_relu": _smooth_leaky_relu,
}


class NormalizedActivation(nn.Module):
    r"""An activation rescaled to unit second moment on :math:`\mathcal N(0, 1)` inputs (e3nn ``normalize2mom``).

    Args:
        name: ``"silu"``, ``"sigmoid"`` or ``"smooth_leaky_relu"`` (slope 0.2).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in _ACTIVATIONS:
            raise ValueError(f"activation {name!r} is not one of {sorted(_ACTIVATIONS)}")
        self.name = name
        scale = _second_moment_scale(name)
        self.scale = 1.0 if abs(scale - 1) < 1e-4 else scale

    def forward(self, x: Tensor) -> Tensor:
        return _ACTIVATIONS[self.name](x) * self.scale

    def extra_repr(self) -> str:
        return f"{self.name}, scale={self.scale:.6f}"


# ------------------------------------------------------------------------------------------------ layers
class IrrepsLinear(nn.Module):
    r"""Equivariant linear map between irreps (official ``LinearRS``; also its tensor products with the constant
    node attribute ``1x0e``, which reduce to this).

    For every pair of entries with the same irrep, :math:`y_{w} \mathrel{+}= \sum_u W_{uw} x_u` (summed over
    input entries, no path normalisation); ``0e`` outputs get a bias. ``weight`` is e3nn's flat layout: the
    ``[mul_in, mul_out]`` block of each pair, input entries outer, output entries inner; initialised
    :math:`\mathcal N(0, 1/\mathrm{fan\_in})` with the fan-in of each output entry, biases zero.

    Shapes: ``[..., irreps_in.dim]`` -> ``[..., irreps_out.dim]``.
    """

    def __init__(self, irreps_in: str | o3.Irreps, irreps_out: str | o3.Irreps, bias: bool = True) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.paths: list[tuple[int, int, int, int]] = []  # (input entry, output entry, offset, size)
        offset = 0
        for i_in, (mul_in, ir_in) in enumerate(self.irreps_in):
            for i_out, (mul_out, ir_out) in enumerate(self.irreps_out):
                if ir_in == ir_out:
                    self.paths.append((i_in, i_out, offset, mul_in * mul_out))
                    offset += mul_in * mul_out
        self.weight = nn.Parameter(torch.randn(offset))
        fan_in = [0] * len(self.irreps_out)
        for i_in, i_out, _, _ in self.paths:
            fan_in[i_out] += self.irreps_in[i_in].mul
        with torch.no_grad():
            for _, i_out, start, size in self.paths:
                self.weight[start : start + size] /= fan_in[i_out] ** 0.5
        self.bias_slices = [
            s
            for s, (_, ir) in zip(self.irreps_out.simplify().slices(), self.irreps_out.simplify(), strict=True)
            if ir == _SCALAR
        ]
        self.bias = nn.Parameter(torch.zeros(_scalar_count(self.irreps_out))) if bias and self.bias_slices else None

    def forward(self, x: Tensor) -> Tensor:
        blocks = _blocks(x, self.irreps_in)
        outputs: list[Tensor | None] = [None] * len(self.irreps_out)
        for i_in, i_out, start, size in self.paths:
            weight = self.weight[start : start + size].view(self.irreps_in[i_in].mul, self.irreps_out[i_out].mul)
            term = torch.einsum("...ui,uw->...wi", blocks[i_in], weight)
            outputs[i_out] = term if outputs[i_out] is None else outputs[i_out] + term
        out = torch.cat(
            [
                (o if o is not None else x.new_zeros(*x.shape[:-1], mul, ir.dim)).flatten(-2)
                for o, (mul, ir) in zip(outputs, self.irreps_out, strict=True)
            ],
            dim=-1,
        )
        if self.bias is not None:
            parts, start, bias_start = [], 0, 0
            for s in self.bias_slices:
                parts += [
                    out[..., start : s.start],
                    out[..., s] + self.bias[bias_start : bias_start + s.stop - s.start],
                ]
                start, bias_start = s.stop, bias_start + s.stop - s.start
            out = torch.cat([*parts, out[..., start:]], dim=-1)
        return out

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, bias={self.bias is not None}"


class DepthwiseTensorProduct(nn.Module):
    r"""Depth-wise ('uvu') tensor product of node features with edge spherical harmonics.

    One path per input entry ``mul x l1``, harmonic degree ``l2`` and output degree ``l3`` allowed by the
    selection rules that is in ``irreps_target`` (or is ``0e``):

    .. math::

        y^{(l_3)}_{u} = w_u \sqrt{2 l_3 + 1} \sum_{m_1 m_2} C^{l_3}_{l_1 m_1, l_2 m_2} x^{(l_1)}_{u m_1} Y^{(l_2)}_{m_2}

    with e3nn 0.4's coefficients (:func:`coupling_e3nn_04`: a few differ in sign from e3nn >= 0.5's).

    The outputs (one entry per path, not merged) are sorted by degree, even parity first. Weights are per
    edge (``[E, weight_numel]``, from a :class:`RadialProfile`) or, with ``internal_weights``, the shared
    parameter ``weight`` (drawn :math:`\mathcal N(0, 1)`).

    Shapes: ``x [E, irreps_in.dim]``, ``sh [E, irreps_sh.dim]`` -> ``[E, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: str | o3.Irreps,
        irreps_sh: str | o3.Irreps,
        irreps_target: str | o3.Irreps,
        internal_weights: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        irreps_target = o3.Irreps(irreps_target)
        outputs, paths = [], []
        for i_in, (mul, ir_in) in enumerate(self.irreps_in):
            for i_sh, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_target or ir_out == _SCALAR:
                        paths.append((i_in, i_sh, len(outputs)))
                        outputs.append((mul, ir_out))
        self.irreps_out, position = sort_even_first(o3.Irreps(outputs))
        self.paths = [(i_in, i_sh, position[k]) for i_in, i_sh, k in paths]
        self.weight_numel = sum(self.irreps_in[i_in].mul for i_in, _, _ in self.paths)
        # sqrt(2 l3 + 1) C^{l3}_{l1 l2}, kept in float64 (not buffers: casting them to float32 and back with the
        # module would lose precision) and cast to the input's dtype and device when used.
        self._couplings = [
            coupling_e3nn_04(l1, l2, l3) * math.sqrt(2 * l3 + 1)
            for l1, l2, l3 in (
                (self.irreps_in[i].ir.l, self.irreps_sh[j].ir.l, self.irreps_out[k].ir.l) for i, j, k in self.paths
            )
        ]
        self.weight = nn.Parameter(torch.randn(self.weight_numel)) if internal_weights else None

    def forward(self, x: Tensor, sh: Tensor, weight: Tensor | None = None) -> Tensor:
        if weight is None:
            if self.weight is None:
                raise ValueError("this DepthwiseTensorProduct has no internal weights: pass weight [E, numel]")
            weight = self.weight.expand(x.shape[0], -1)
        x_blocks, sh_blocks = _blocks(x, self.irreps_in), _blocks(sh, self.irreps_sh)
        outputs: list[Tensor] = [x.new_zeros(0)] * len(self.irreps_out)
        offset = 0
        for index, (i_in, i_sh, i_out) in enumerate(self.paths):
            mul = self.irreps_in[i_in].mul
            coupling = self._couplings[index].to(device=x.device, dtype=x.dtype)  # [2l1+1, 2l2+1, 2l3+1]
            kernel = torch.einsum("ej,ijk->eik", sh_blocks[i_sh][:, 0], coupling)  # [E, 2l1+1, 2l3+1]
            path = torch.einsum("eui,eik->euk", x_blocks[i_in], kernel) * weight[:, offset : offset + mul, None]
            outputs[i_out] = path.flatten(1)
            offset += mul
        return torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}, weight_numel={self.weight_numel}"


class RadialProfile(nn.Module):
    r"""MLP of the radial basis giving per-edge tensor-product weights (official ``RadialProfile``).

    ``net``: ``Linear -> LayerNorm -> SiLU`` for each hidden width, then a bias-free ``Linear``; plus the
    parameter ``offset``. Hidden biases start at zero (as the official model's ``_init_weights``), the offset
    uniform in :math:`\pm 1/\sqrt{\mathrm{fan\_in}}`.

    Shapes: ``[E, channels[0]]`` -> ``[E, channels[-1]]``.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(1, len(channels)):
            last = i == len(channels) - 1
            layers.append(nn.Linear(channels[i - 1], channels[i], bias=not last))
            if not last:
                layers += [nn.LayerNorm(channels[i]), nn.SiLU()]
                nn.init.zeros_(layers[-3].bias)
        self.net = nn.Sequential(*layers)
        bound = 1 / math.sqrt(channels[-2])
        self.offset = nn.Parameter(torch.empty(channels[-1]).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + self.offset


class Gate(nn.Module):
    r"""Gate activation (e3nn ``Gate``): ``0e`` scalars through SiLU, every other entry multiplied channel by
    channel by sigmoid gates, both rescaled to unit second moment.

    Input layout ``scalars + gates + gated`` (:attr:`irreps_in`), output ``scalars + gated``
    (:attr:`irreps_out`), for ``irreps_out`` whose ``0e`` entries come first once sorted.
    """

    def __init__(self, irreps_out: str | o3.Irreps) -> None:
        super().__init__()
        irreps_out = o3.Irreps(irreps_out)
        self.irreps_scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir == _SCALAR]).simplify()
        self.irreps_gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir != _SCALAR]).simplify()
        num_gates = self.irreps_gated.num_irreps
        self.irreps_in = (self.irreps_scalars + o3.Irreps(f"{num_gates}x0e") + self.irreps_gated).simplify()
        if num_gates == 0:
            self.irreps_in = self.irreps_scalars
        self.irreps_out = self.irreps_scalars + self.irreps_gated
        self.scalar_act, self.gate_act = NormalizedActivation("silu"), NormalizedActivation("sigmoid")

    def forward(self, x: Tensor) -> Tensor:
        num_scalars, num_gates = self.irreps_scalars.dim, self.irreps_gated.num_irreps
        scalars = self.scalar_act(x[..., :num_scalars])
        if num_gates == 0:
            return scalars
        gates = self.gate_act(x[..., num_scalars : num_scalars + num_gates])
        gated = x[..., num_scalars + num_gates :]
        out, start = [scalars], 0
        for block in _blocks(gated, self.irreps_gated):
            mul = block.shape[-2]
            out.append((block * gates[..., start : start + mul, None]).flatten(-2))
            start += mul
        return torch.cat(out, dim=-1)


class IrrepsLayerNorm(nn.Module):
    r"""Equivariant layer norm (official ``EquivariantLayerNormV2``), per entry ``mul x l`` of the irreps:

    .. math::

        y_u = \frac{x_u - \bar x\,[l = 0e]}{\sqrt{\frac{1}{\mathrm{mul}} \sum_v
        \frac{\|x_v - \bar x\,[l=0e]\|^2}{2l+1} + \epsilon}}\, g_u + b_u\,[l = 0e]

    (``0e`` channels are centred and get a bias). Parameters ``affine_weight [num_irreps]`` (ones),
    ``affine_bias [number of 0e channels]`` (zeros).
    """

    def __init__(self, irreps: str | o3.Irreps, eps: float = 1e-5) -> None:
        super().__init__()
        self.irreps, self.eps = o3.Irreps(irreps), eps
        self.affine_weight = nn.Parameter(torch.ones(self.irreps.num_irreps))
        self.affine_bias = nn.Parameter(torch.zeros(_scalar_count(self.irreps)))

    def forward(self, x: Tensor) -> Tensor:
        out, weight_start, bias_start = [], 0, 0
        for (mul, ir), field in zip(self.irreps, _blocks(x, self.irreps), strict=True):
            if ir == _SCALAR:
                field = field - field.mean(dim=1, keepdim=True)
            norm = field.pow(2).mean(-1).mean(dim=1, keepdim=True)  # [N, 1]
            scale = (norm + self.eps).pow(-0.5) * self.affine_weight[None, weight_start : weight_start + mul]
            weight_start += mul
            field = field * scale[..., None]
            if ir == _SCALAR:
                field = field + self.affine_bias[bias_start : bias_start + mul, None]
                bias_start += mul
            out.append(field.reshape(x.shape[0], -1))
        return torch.cat(out, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps}, eps={self.eps}"


class SeparableTensorProduct(nn.Module):
    r"""Depth-wise tensor product, then :class:`IrrepsLinear` (official ``SeparableFCTP``, no norm), optionally
    followed by a :class:`Gate`. ``dtp_rad`` gives per-edge weights from the radial basis (``fc_neurons``),
    otherwise the depth-wise product has its own weights.

    Shapes: ``x [E, irreps_in.dim]``, ``sh [E, ...]``, ``rbf [E, F]`` -> ``[E, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        fc_neurons: Sequence[int] | None,
        use_activation: bool = False,
    ) -> None:
        super().__init__()
        self.dtp = DepthwiseTensorProduct(irreps_in, irreps_sh, irreps_out, internal_weights=fc_neurons is None)
        self.dtp_rad = None
        if fc_neurons is not None:
            self.dtp_rad = RadialProfile([*fc_neurons, self.dtp.weight_numel])  # per-path rescale is 1 (fan-in 1)
        self.gate = Gate(irreps_out) if use_activation else None
        self.lin = IrrepsLinear(self.dtp.irreps_out.simplify(), self.gate.irreps_in if self.gate else irreps_out)

    def forward(self, x: Tensor, sh: Tensor, rbf: Tensor) -> Tensor:
        weight = self.dtp_rad(rbf) if self.dtp_rad is not None else None
        out = self.lin(self.dtp(x, sh, weight))
        return self.gate(out) if self.gate is not None else out


def _to_heads(x: Tensor, irreps_head: o3.Irreps, num_heads: int) -> Tensor:
    """``[E, irreps_head * H]`` (entries ``mul*H x l``, head-major inside each) -> ``[E, H, irreps_head.dim]``."""
    parts, start = [], 0
    for mul, ir in irreps_head:
        size = mul * num_heads * ir.dim
        parts.append(x[:, start : start + size].reshape(x.shape[0], num_heads, mul * ir.dim))
        start += size
    return torch.cat(parts, dim=2)


def _from_heads(x: Tensor, irreps_head: o3.Irreps) -> Tensor:
    """Inverse of :func:`_to_heads`: ``[N, H, irreps_head.dim]`` -> ``[N, H * irreps_head.dim]``."""
    return torch.cat([x[:, :, s].reshape(x.shape[0], -1) for s in irreps_head.slices()], dim=1)


class GraphAttention(nn.Module):
    r"""Equivariant graph attention (official ``GraphAttention``).

    :math:`m_{ij} = W_s x_j + W_d x_i` (``merge_src``, ``merge_dst``). Non-linear messages: a depth-wise
    tensor product with radial weights (``sep_act.dtp``, ``sep_act.dtp_rad``) gives the attention scalars
    (``sep_alpha``) and, through ``sep_act.lin`` + gate and a second depth-wise product with shared weights
    (``sep_value``), the values. Linear messages: one separable product ``sep`` gives both. Per head,
    :math:`\alpha_{ij} = \mathrm{softmax}_j\, a_h^\top \sigma(s_{ij})` (smooth leaky ReLU, ``alpha_dot``);
    the output is ``proj`` of :math:`\sum_j \alpha_{ij} v_{ij}`.

    Shapes: ``x [N, irreps_node_input.dim]``, ``sh [E, ...]``, ``rbf [E, F]``, ``edge_index [2, E]`` ->
    ``[N, irreps_node_output.dim]``.
    """

    def __init__(
        self,
        irreps_node_input: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_node_output: o3.Irreps,
        fc_neurons: Sequence[int],
        irreps_head: o3.Irreps,
        num_heads: int,
        irreps_pre_attn: o3.Irreps | None = None,
        rescale_degree: bool = False,
        nonlinear_message: bool = True,
        alpha_drop: float = 0.0,
    ) -> None:
        super().__init__()
        irreps_pre_attn = irreps_node_input if irreps_pre_attn is None else irreps_pre_attn
        self.irreps_head, self.num_heads = irreps_head, num_heads
        self.rescale_degree, self.nonlinear_message = rescale_degree, nonlinear_message
        self.merge_src = IrrepsLinear(irreps_node_input, irreps_pre_attn, bias=True)
        self.merge_dst = IrrepsLinear(irreps_node_input, irreps_pre_attn, bias=False)
        irreps_heads = sort_even_first(irreps_head * num_heads)[0].simplify()
        num_alpha = _scalar_count(irreps_heads)
        self.alpha_per_head = num_alpha // num_heads
        self.irreps_alpha_head = o3.Irreps(f"{self.alpha_per_head}x0e")
        irreps_alpha = o3.Irreps(f"{num_alpha}x0e")
        if nonlinear_message:
            self.sep_act = SeparableTensorProduct(irreps_pre_attn, irreps_sh, irreps_pre_attn, fc_neurons, True)
            self.sep_alpha = IrrepsLinear(self.sep_act.dtp.irreps_out, irreps_alpha)
            self.sep_value = SeparableTensorProduct(irreps_pre_attn, irreps_sh, irreps_heads, None)
        else:
            self.sep = SeparableTensorProduct(
                irreps_pre_attn, irreps_sh, (irreps_alpha + irreps_heads).simplify(), fc_neurons
            )
            self.irreps_alpha_value = (self.irreps_alpha_head + irreps_head).simplify()
        self.alpha_act = NormalizedActivation("smooth_leaky_relu")
        bound = math.sqrt(6.0 / (num_heads + self.alpha_per_head))  # glorot, as the official code
        self.alpha_dot = nn.Parameter(torch.empty(1, num_heads, self.alpha_per_head).uniform_(-bound, bound))
        self.alpha_dropout = nn.Dropout(alpha_drop) if alpha_drop > 0 else None
        self.proj = IrrepsLinear(irreps_heads, irreps_node_output)

    def forward(self, x: Tensor, sh: Tensor, rbf: Tensor, edge_index: Tensor) -> Tensor:
        source, target = edge_index
        message = self.merge_src(x)[source] + self.merge_dst(x)[target]  # [E, pre_attn]
        if self.nonlinear_message:
            message = self.sep_act.dtp(message, sh, self.sep_act.dtp_rad(rbf))
            alpha = _to_heads(self.sep_alpha(message), self.irreps_alpha_head, self.num_heads)
            value = self.sep_act.gate(self.sep_act.lin(message))
            value = _to_heads(self.sep_value(value, sh, rbf), self.irreps_head, self.num_heads)  # [E, H, head]
        else:
            message = _to_heads(self.sep(message, sh, rbf), self.irreps_alpha_value, self.num_heads)
            alpha, value = message[..., : self.alpha_per_head], message[..., self.alpha_per_head :]
        logits = torch.einsum("eik,aik->ei", self.alpha_act(alpha), self.alpha_dot)  # [E, H]
        weights = segment_softmax(logits, target, x.shape[0])[..., None]
        if self.alpha_dropout is not None:
            weights = self.alpha_dropout(weights)
        attention = value.new_zeros(x.shape[0], *value.shape[1:]).index_add_(0, target, value * weights)
        attention = _from_heads(attention, self.irreps_head)
        if self.rescale_degree:
            attention = attention * torch.bincount(target, minlength=x.shape[0]).to(x.dtype)[:, None]
        return self.proj(attention)


class FeedForwardNetwork(nn.Module):
    """Linear -> gate -> linear (official ``FeedForwardNetwork``: ``fctp_1`` + its gate, ``fctp_2``)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_mid: o3.Irreps, irreps_out: o3.Irreps) -> None:
        super().__init__()
        self.gate = Gate(irreps_mid)
        self.fctp_1 = IrrepsLinear(irreps_in, self.gate.irreps_in)
        self.fctp_2 = IrrepsLinear(self.gate.irreps_out, irreps_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fctp_2(self.gate(self.fctp_1(x)))


def _drop_path(x: Tensor, batch: Tensor, num_graphs: int, probability: float) -> Tensor:
    """Stochastic depth per graph: zero the whole update of a graph with ``probability``, rescale the rest."""
    keep = 1.0 - probability
    mask = (keep + torch.rand(num_graphs, 1, dtype=x.dtype, device=x.device)).floor_()
    return x * (mask / keep)[batch]


class TransBlock(nn.Module):
    r"""One Equiformer layer: :math:`x' = x + \mathrm{GA}(\mathrm{LN}_1 x)`,
    :math:`x'' = S(x') + \mathrm{FFN}(\mathrm{LN}_2 x')` with :math:`S` = ``ffn_shortcut`` (a linear map) when
    the output irreps differ from the input's, else the identity; stochastic depth when training."""

    def __init__(
        self,
        irreps_node: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_output: o3.Irreps,
        irreps_mlp_mid: o3.Irreps,
        drop_path_rate: float = 0.0,
        **attention: Any,
    ) -> None:
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm_1 = IrrepsLayerNorm(irreps_node)
        self.ga = GraphAttention(irreps_node, irreps_sh, irreps_node, **attention)
        self.norm_2 = IrrepsLayerNorm(irreps_node)
        self.ffn = FeedForwardNetwork(irreps_node, irreps_mlp_mid, irreps_output)
        self.ffn_shortcut = IrrepsLinear(irreps_node, irreps_output) if irreps_node != irreps_output else None

    def forward(self, x: Tensor, sh: Tensor, rbf: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        update = self.ga(self.norm_1(x), sh, rbf, edge_index)
        if self.training and self.drop_path_rate > 0:
            update = _drop_path(update, batch, num_graphs, self.drop_path_rate)
        x = x + update
        update = self.ffn(self.norm_2(x))
        if self.ffn_shortcut is not None:
            x = self.ffn_shortcut(x)
        if self.training and self.drop_path_rate > 0:
            update = _drop_path(update, batch, num_graphs, self.drop_path_rate)
        return x + update


class NodeEmbedding(nn.Module):
    """One-hot of a type index (element or tag) -> ``0e`` channels of the node irreps (official
    ``NodeEmbeddingNetwork``; weights scaled by :math:`\\sqrt{\\text{num\\_types}}` at initialisation)."""

    def __init__(self, irreps_node: o3.Irreps, num_types: int) -> None:
        super().__init__()
        self.num_types = num_types
        self.atom_type_lin = IrrepsLinear(f"{num_types}x0e", irreps_node)
        with torch.no_grad():
            self.atom_type_lin.weight.mul_(num_types**0.5)

    def forward(self, index: Tensor, dtype: torch.dtype) -> Tensor:
        return self.atom_type_lin(nn.functional.one_hot(index, self.num_types).to(dtype))


class EdgeDegreeEmbedding(nn.Module):
    r"""Initial features from the edges (official ``EdgeDegreeEmbeddingNetwork``):
    :math:`\frac{1}{\sqrt{\bar d}} \sum_j \mathrm{proj}\,\mathrm{DTP}(\mathrm{exp}(1), Y(\hat r_{ij});\, \phi(r_{ij}))`.

    Shapes: ``sh [E, ...]``, ``rbf [E, F]``, ``edge_index [2, E]`` -> ``[N, irreps_node.dim]``.
    """

    def __init__(self, irreps_node: o3.Irreps, irreps_sh: o3.Irreps, fc_neurons: Sequence[int], avg_degree: float):
        super().__init__()
        self.avg_degree = float(avg_degree)
        self.exp = IrrepsLinear("1x0e", irreps_node)
        self.dw = DepthwiseTensorProduct(irreps_node, irreps_sh, irreps_node)
        self.rad = RadialProfile([*fc_neurons, self.dw.weight_numel])
        self.proj = IrrepsLinear(self.dw.irreps_out.simplify(), irreps_node)

    def forward(self, sh: Tensor, rbf: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
        features = self.exp(sh.new_ones(1, 1)).expand(sh.shape[0], -1)  # the same for every source node
        edges = self.proj(self.dw(features, sh, self.rad(rbf)))
        return edges.new_zeros(num_nodes, edges.shape[1]).index_add_(0, edge_index[1], edges) / self.avg_degree**0.5


class BesselRadialBasis(nn.Module):
    """GemNet's ``RadialBasis(rbf={"name": "spherical_bessel"})``: a trainable spherical-Bessel basis times the
    degree-5 polynomial envelope, both on :math:`r / r_c` (``rbf.frequencies``)."""

    def __init__(self, num_basis: int, cutoff: float) -> None:
        super().__init__()
        self.inv_cutoff = 1.0 / cutoff
        self.envelope = PolynomialEnvelope(5)
        self.rbf = BesselBasis(cutoff, num_basis, trainable=True)

    def forward(self, dist: Tensor) -> Tensor:
        return self.envelope(dist * self.inv_cutoff)[..., None] * self.rbf(dist)


def _radial_basis(basis_type: str, num_basis: int, cutoff: float) -> nn.Module:
    if basis_type == "gaussian":
        return GaussianRadialBasis(num_basis, cutoff)
    if basis_type == "bessel":
        return BesselRadialBasis(num_basis, cutoff)
    if basis_type == "exp":
        return ExpNormalSmearing(0.0, cutoff, num_basis, trainable=False)
    raise ValueError(f"basis_type must be 'gaussian', 'bessel' or 'exp', got {basis_type!r}")


# ------------------------------------------------------------------------------------------------ model
class EquiformerV1(nn.Module):
    r"""Equiformer (v1): property model (QM9, OC20 IS2RE) or conservative potential (MD17).

    Reads ``pos``, ``z``, ``edge_index``, ``edge_shift``, ``cell`` (+ ``tags`` with ``num_tags``); build the
    edges with ``zoo.graph.radius_graph(graph, model.metadata["cutoff"],
    max_neighbors=model.metadata["max_neighbors"])``.

    Args:
        irreps_node_embedding: node irreps of every block (``1e`` vectors: SE(3); odd parities: E(3)).
        num_layers: number of :class:`TransBlock`; the last outputs ``irreps_feature``.
        irreps_sh: edge spherical harmonics, e.g. ``1x0e+1x1e+1x2e`` (component normalisation).
        max_radius: cutoff :math:`r_c` (Å) of the radial basis and of the neighbour list.
        number_of_basis, basis_type: radial basis: learnable Gaussians (``"gaussian"``), exp-normal with a
            cosine cutoff (``"exp"``) or spherical Bessel with a polynomial envelope (``"bessel"``).
        fc_neurons: hidden widths of the radial MLPs.
        irreps_feature: output irreps of the last block (its ``0e`` part feeds the head).
        irreps_head, num_heads: irreps of one attention head and the number of heads.
        irreps_pre_attn: irreps of the merged messages (default: ``irreps_node_embedding``).
        rescale_degree: multiply the attention output by the in-degree.
        nonlinear_message: non-linear messages (the published models) or linear ones.
        irreps_mlp_mid: hidden irreps of the FFNs.
        alpha_drop, drop_path_rate: attention dropout and stochastic depth (training only).
        elements: atomic numbers in embedding order (QM9: ``[1, 6, 7, 8, 9]``); ``None``: the atomic number
            is the index, below ``max_atom_type``.
        max_atom_type: size of the element embedding when ``elements`` is ``None``.
        num_tags: OC20 tag embedding (0 sub-surface, 1 surface, 2 adsorbate) when > 0 (reads ``tags``).
        avg_num_nodes, avg_degree: :math:`\bar n`, :math:`\bar d`.
        task: ``"property"`` (``{target: [B]}``) or ``"potential"`` (energy and conservative forces).
        target, target_unit: name and unit of the property; for potentials the energy unit.
        target_mean, target_std: outputs are :math:`y \sigma + \mu` (forces :math:`\sigma \cdot`).
        auxiliary_head: the IS2RS head predicting ``relaxed_displacement [N, 3]`` (× ``displacement_std``).
        max_neighbors: neighbour-list limit the model was trained with (metadata only; ``None``: all).
    """

    reads = ("pos", "z", "edge_index", "edge_shift", "cell")

    def __init__(
        self,
        *,
        irreps_node_embedding: str = "128x0e+64x1e+32x2e",
        num_layers: int = 6,
        irreps_sh: str = "1x0e+1x1e+1x2e",
        max_radius: float = 5.0,
        number_of_basis: int = 128,
        basis_type: BasisType = "gaussian",
        fc_neurons: Sequence[int] = (64, 64),
        irreps_feature: str = "512x0e",
        irreps_head: str = "32x0e+16x1e+8x2e",
        num_heads: int = 4,
        irreps_pre_attn: str | None = None,
        rescale_degree: bool = False,
        nonlinear_message: bool = True,
        irreps_mlp_mid: str = "384x0e+192x1e+96x2e",
        alpha_drop: float = 0.2,
        drop_path_rate: float = 0.0,
        elements: Sequence[int] | None = QM9_ELEMENTS,
        max_atom_type: int = 64,
        num_tags: int = 0,
        avg_num_nodes: float = QM9_AVG_NUM_NODES,
        avg_degree: float = QM9_AVG_DEGREE,
        task: Task = "property",
        target: str = "y",
        target_unit: str = "",
        target_mean: float = 0.0,
        target_std: float = 1.0,
        auxiliary_head: bool = False,
        displacement_std: float = 1.0,
        max_neighbors: int | None = None,
    ) -> None:
        super().__init__()
        if task not in ("property", "potential"):
            raise ValueError(f"task must be 'property' or 'potential', got {task!r}")
        node = _irreps(irreps_node_embedding, "irreps_node_embedding")
        self.irreps_sh = _irreps(irreps_sh, "irreps_sh")
        feature = _irreps(irreps_feature, "irreps_feature")
        pre_attn = None if irreps_pre_attn is None else _irreps(irreps_pre_attn, "irreps_pre_attn")
        head = _irreps(irreps_head, "irreps_head")
        mlp_mid = _irreps(irreps_mlp_mid, "irreps_mlp_mid")
        if any(mul != 1 for mul, _ in self.irreps_sh) or [ir.l for _, ir in self.irreps_sh] != list(
            range(self.irreps_sh.lmax + 1)
        ):
            raise ValueError(f"irreps_sh must be 1x0e+1x1?+... up to lmax, got {self.irreps_sh}")
        if _scalar_count(feature) == 0:
            raise ValueError(f"irreps_feature={feature} needs 0e channels for the head")
        self.elements = None if elements is None else [int(e) for e in elements]
        self.num_types = len(self.elements) if self.elements is not None else int(max_atom_type)
        self.num_tags, self.task, self.target = num_tags, task, target
        self.avg_num_nodes = float(avg_num_nodes)
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.displacement_std = float(displacement_std)

        self.atom_embed = NodeEmbedding(node, self.num_types)
        self.tag_embed = NodeEmbedding(node, num_tags) if num_tags > 0 else None
        self.rbf = _radial_basis(basis_type, number_of_basis, max_radius)
        fc = [number_of_basis, *fc_neurons]
        self.edge_deg_embed = EdgeDegreeEmbedding(node, self.irreps_sh, fc, avg_degree)
        attention: dict[str, Any] = dict(
            fc_neurons=fc,
            irreps_head=head,
            num_heads=num_heads,
            irreps_pre_attn=pre_attn,
            rescale_degree=rescale_degree,
            nonlinear_message=nonlinear_message,
            alpha_drop=alpha_drop,
        )
        self.blocks = nn.ModuleList(
            TransBlock(
                node, self.irreps_sh, feature if i == num_layers - 1 else node, mlp_mid, drop_path_rate, **attention
            )
            for i in range(num_layers)
        )
        self.norm = IrrepsLayerNorm(feature)
        scalars = o3.Irreps(f"{_scalar_count(feature)}x0e")
        self.head = nn.Sequential(
            IrrepsLinear(feature, scalars), NormalizedActivation("silu"), IrrepsLinear(scalars, "1x0e")
        )
        self.auxiliary_head = None
        if auxiliary_head:
            vector = o3.Irreps("1x1o") if o3.Irrep("1o") in feature else o3.Irreps("1x1e")
            self.auxiliary_head = GraphAttention(feature, self.irreps_sh, vector, **attention)
        known = self.elements if self.elements is not None else list(range(1, self.num_types))
        self.metadata: dict[str, Any] = {
            "task": task,
            "cutoff": float(max_radius),
            "max_neighbors": max_neighbors,
            "elements": known,
            "parity": "E(3)" if any(ir.p == -1 for _, ir in node) else "SE(3)",
        }
        if task == "potential":
            unit = target_unit or "eV"
            self.metadata.update(
                units={"energy": unit, "forces": f"{unit}/A", "pos": "A"},
                force_mode="conservative",
                per_atom_energies=True,
            )
        else:
            self.metadata.update(targets=[target], units={target: target_unit, "pos": "A"})
        if auxiliary_head:
            self.metadata["units"]["relaxed_displacement"] = "A"

    # -------------------------------------------------------------------------------------- forward
    def _type_index(self, z: Tensor) -> Tensor:
        if self.elements is None:
            if bool((z >= self.num_types).any()) or bool((z < 0).any()):
                raise GraphError(
                    f"this model knows atomic numbers below {self.num_types}; got {sorted(set(z.tolist()))}"
                )
            return z
        lookup = torch.full((max(max(self.elements), int(z.max())) + 1,), -1, dtype=torch.long, device=z.device)
        lookup[torch.tensor(self.elements, device=z.device)] = torch.arange(len(self.elements), device=z.device)
        index = lookup[z]
        if bool((index < 0).any()):
            unknown = sorted(set(z[index < 0].tolist()))
            raise GraphError(f"this model knows the elements {self.elements}; the graph has atomic numbers {unknown}")
        return index

    def _check(self, graph: Data) -> None:
        fields = (*self.reads, "tags") if self.tag_embed is not None else self.reads
        for field in fields:
            if getattr(graph, field, None) is None:
                raise GraphError(
                    f"EquiformerV1 reads graph.{field}, which this graph does not have"
                    + (
                        " (build the edges with zoo.graph.radius_graph(graph, model.metadata['cutoff']))"
                        if field in ("edge_index", "edge_shift")
                        else ""
                    )
                )
        dtype = self.atom_embed.atom_type_lin.weight.dtype
        if graph.pos.dtype != dtype:
            raise GraphError(f"graph.pos is {graph.pos.dtype} but the model is {dtype}: cast one of them")

    def embed(self, graph: Data) -> tuple[Tensor, Tensor, Tensor]:
        r"""The backbone: ``(node features [N, irreps_feature.dim] after the final norm, sh [E, ...], rbf [E, F])``."""
        vec, length = edge_vectors(graph)
        sh = spherical_harmonics(self.irreps_sh.lmax, vec)  # component normalisation
        rbf = self.rbf(length)
        dtype, num_nodes = graph.pos.dtype, graph.pos.shape[0]
        x = self.atom_embed(self._type_index(graph.z.long()), dtype)
        if self.tag_embed is not None:
            x = x + self.tag_embed(graph.tags.long(), dtype)
        x = x + self.edge_deg_embed(sh, rbf, graph.edge_index, num_nodes)
        batch, count = node_graph_index(graph), num_graphs(graph)
        for block in self.blocks:
            x = block(x, sh, rbf, graph.edge_index, batch, count)
        return self.norm(x), sh, rbf

    def atom_outputs(self, graph: Data) -> Tensor:
        """Per-atom head outputs ``[N]``: their sum over a graph, divided by :math:`\\sqrt{\\bar n}`, is the
        normalised prediction."""
        return self.head(self.embed(graph)[0])[:, 0]

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{target: [B]}`` (property) or ``{"energy": [B], "energies": [N], "forces": [N, 3]}`` (potential),
        plus ``relaxed_displacement [N, 3]`` with the auxiliary head."""
        self._check(graph)
        batch, count = node_graph_index(graph), num_graphs(graph)
        if self.task == "potential":
            atoms = torch.bincount(batch, minlength=count).to(graph.pos.dtype)

            def atom_energies(strained: Data) -> Tensor:
                node = self.atom_outputs(strained)
                return node / self.avg_num_nodes**0.5 * self.target_std + (self.target_mean / atoms)[batch]

            return conservative_outputs(atom_energies, graph, create_graph=self.training)
        x, sh, rbf = self.embed(graph)
        node = self.head(x)[:, 0]
        total = node.new_zeros(count).index_add_(0, batch, node) / self.avg_num_nodes**0.5
        out = {self.target: total * self.target_std + self.target_mean}
        if self.auxiliary_head is not None:
            out["relaxed_displacement"] = self.auxiliary_head(x, sh, rbf, graph.edge_index) * self.displacement_std
        return out


# ------------------------------------------------------------------------------------------------- variants
_L2: dict[str, Any] = dict(
    irreps_node_embedding="128x0e+64x1e+32x2e",
    irreps_sh="1x0e+1x1e+1x2e",
    irreps_head="32x0e+16x1e+8x2e",
    num_heads=4,
    irreps_mlp_mid="384x0e+192x1e+96x2e",
    irreps_feature="512x0e",
    max_radius=5.0,
)
_MD17: dict[str, Any] = dict(
    basis_type="exp",
    number_of_basis=32,
    alpha_drop=0.0,
    elements=None,
    max_atom_type=64,
    task="potential",
    target="energy",
    target_unit="kcal/mol",
)
_OC20: dict[str, Any] = dict(
    irreps_node_embedding="256x0e+128x1e",
    irreps_sh="1x0e+1x1e",
    irreps_head="32x0e+16x1e",
    num_heads=8,
    irreps_pre_attn="256x0e+128x1e",
    irreps_mlp_mid="768x0e+384x1e",
    max_radius=5.0,
    number_of_basis=128,
    elements=None,
    max_atom_type=84,
    num_tags=3,
    avg_num_nodes=OC20_AVG_NUM_NODES,
    avg_degree=OC20_AVG_DEGREE,
    target="relaxed_energy",
    target_unit="eV",
    max_neighbors=500,
)
_VARIANTS: dict[str, dict[str, Any]] = {
    "equiformer_v1": {},
    "equiformer_v1-qm9": {**_L2},
    "equiformer_v1-qm9-bessel": {**_L2, "basis_type": "bessel", "number_of_basis": 8, "alpha_drop": 0.0},
    "equiformer_v1-md17-l2": {**_L2, **_MD17},
    "equiformer_v1-md17-l3": {
        **_L2,
        **_MD17,
        "irreps_node_embedding": "128x0e+64x1e+64x2e+32x3e",
        "irreps_sh": "1x0e+1x1e+1x2e+1x3e",
        "irreps_head": "32x0e+16x1e+16x2e+8x3e",
        "irreps_mlp_mid": "384x0e+192x1e+192x2e+96x3e",
    },
    "equiformer_v1-oc20-is2re": {**_OC20, "num_layers": 6, "irreps_feature": "512x0e"},
    "equiformer_v1-oc20-is2re-18l": {
        **_OC20,
        "num_layers": 18,
        "irreps_feature": "512x0e+256x1e",
        "drop_path_rate": 0.05,
        "auxiliary_head": True,
        "displacement_std": 0.8771552443504333,
    },
}


def _create_equiformer_v1(variant: str, **kwargs: Any) -> EquiformerV1:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    return EquiformerV1(**{**_VARIANTS[variant], **kwargs})


@register_model("equiformer_v1", task="property")
def equiformer_v1(**kwargs: Any) -> EquiformerV1:
    """Equiformer (Liao and Smidt 2023), any configuration (defaults: the QM9 model)."""
    return _create_equiformer_v1("equiformer_v1", **kwargs)


@register_model("equiformer_v1-qm9", task="property")
def equiformer_v1_qm9(**kwargs: Any) -> EquiformerV1:
    """Equiformer for QM9: 6 blocks, lmax 2, 128 Gaussians, r = 5 A, 3,531,715 parameters."""
    return _create_equiformer_v1("equiformer_v1-qm9", **kwargs)


@register_model("equiformer_v1-qm9-bessel", task="property")
def equiformer_v1_qm9_bessel(**kwargs: Any) -> EquiformerV1:
    """Equiformer for QM9 with 8 spherical-Bessel functions (6 targets' official scripts), 3,477,705 parameters."""
    return _create_equiformer_v1("equiformer_v1-qm9-bessel", **kwargs)


@register_model("equiformer_v1-md17-l2", task="potential")
def equiformer_v1_md17_l2(**kwargs: Any) -> EquiformerV1:
    """Equiformer for MD17, lmax 2, 32 exp-normal functions, conservative forces, 3,496,001 parameters."""
    return _create_equiformer_v1("equiformer_v1-md17-l2", **kwargs)


@register_model("equiformer_v1-md17-l3", task="potential")
def equiformer_v1_md17_l3(**kwargs: Any) -> EquiformerV1:
    """Equiformer for MD17, lmax 3, 32 exp-normal functions, conservative forces, 5,500,865 parameters."""
    return _create_equiformer_v1("equiformer_v1-md17-l3", **kwargs)


@register_model("equiformer_v1-oc20-is2re", task="property")
def equiformer_v1_oc20_is2re(**kwargs: Any) -> EquiformerV1:
    """Equiformer for OC20 IS2RE: 6 blocks, 256x0e+128x1e, 8 heads, 9,123,331 parameters."""
    return _create_equiformer_v1("equiformer_v1-oc20-is2re", **kwargs)


@register_model("equiformer_v1-oc20-is2re-18l", task="property")
def equiformer_v1_oc20_is2re_18l(**kwargs: Any) -> EquiformerV1:
    """Equiformer for OC20 IS2RE: 18 blocks with the IS2RS auxiliary head (noisy nodes), 26,773,379 parameters."""
    return _create_equiformer_v1("equiformer_v1-oc20-is2re-18l", **kwargs)
