r"""eSCN: equivariant spherical channel network with SO(2) convolutions (Passaro and Zitnick, ICML 2023).

Node features are spherical channels :math:`x_i \in \mathbb{R}^{K \times C}`, :math:`K = (l_{max}+1)^2`
(:mod:`zoo.nn.so3`). The arithmetic and parameter names follow fairchem 1.x (``escn``, the monolithic
``eSCN`` of the OC20 checkpoints, and ``escn_backbone`` + heads), so converted state dicts load with
``strict=True`` (:func:`zoo.converters.fairchem.convert_state_dict`). With :math:`D_{ij} = D(R_{ij})` the
Wigner matrices of the edge frames (orders :math:`|m| > m_{max}` dropped in the frame, :mod:`zoo.nn.so3`):

.. math::

    x_i^{(0)} &= \mathrm{Emb}(z_i)\,\delta_{l0}, \qquad
    h_{ij} = \mathrm{SiLU}\big(W_e\, \mathrm{SiLU}(W_d\, \phi(r_{ij}) + e_s(z_j) + e_t(z_i))\big) \\
    a_i &= \sum_{j} D_{ij}^T\, \sigma_{S^2}\Big(\mathrm{SO2}_s(D_{ij}\, x_j;\ h_{ij})
      + \mathrm{SO2}_t(D_{ij}\, x_i;\ h_{ij})\Big) \\
    x^{(t+1)}_i &= x^{(t)}_i + F\, \mathrm{MLP}\big([G x^{(t)}_i,\ G a_i]\big)
      \quad (\text{no residual in the first layer})

with :math:`\phi` 600 Gaussians on :math:`[0, 12]` Å (width :math:`2 \times` their spacing in the published
models), :math:`\sigma_{S^2}` SiLU applied on an :math:`S^2` grid of the reduced coefficients, :math:`G, F` the
maps to and from the grid of all coefficients (e3nn ``"integral"`` normalisation, :class:`~zoo.nn.S2Grid`),
and the MLP a bias-free ``Linear(2C, C) -> SiLU -> Linear -> SiLU -> Linear`` applied at every grid point.
Each SO(2) block (:class:`SO2Block`) acts per order :math:`m` with edge-dependent gates:

.. math::

    y_{m=0} = W_2 \big((W_1\, x_{m=0}) \odot \mathrm{SiLU}(V h)\big), \qquad
    \begin{pmatrix} y_{+m} \\ y_{-m} \end{pmatrix} =
    \begin{pmatrix} R_m x_{+m} - I_m x_{-m} \\ R_m x_{-m} + I_m x_{+m} \end{pmatrix},
    \quad R_m = W^r_2\, \mathrm{diag}(g^r)\, W^r_1,\ I_m = W^i_2\, \mathrm{diag}(g^i)\, W^i_1,

:math:`(g^r, g^i) = \mathrm{SiLU}(V_m h)`. The outputs sample each atom's features at :math:`P` fixed points
:math:`p_k` on the sphere, :math:`v_{ik} = \sum_{lm} Y_{lm}(p_k)\, x_{i,lm}` (:func:`sphere_points`), and
predict directly (not as gradients):

.. math:: E = \sigma_E\, \frac{1}{1000} \sum_i \frac{1}{P} \sum_k \mathrm{MLP}_E(v_{ik}) + \mu_E + \sum_i e_{z_i},
    \qquad F_i = \sigma_F\, \frac{1}{P}\sum_k \mathrm{MLP}_F(v_{ik})\, p_k + \mu_F

with the normaliser :math:`(\mu, \sigma)` of the checkpoint and optional per-element references :math:`e_z`.

The edge frames' roll about each edge is a free choice (``edge_frame``): fairchem draws it at random at every
call; zoo uses a deterministic choice by default. The S2 activations are only approximately invariant to it,
so outputs move by about :math:`10^{-5}` eV/Å between choices (see UPSTREAM-NOTES); pass ``perpendicular=``
to ``forward`` to reproduce a given draw.

Registered architectures: ``escn`` (any configuration) and ``escn-l4-m2-lay12``, ``escn-l6-m2-lay12``,
``escn-l6-m3-lay20`` (the published OC20 sizes: 36,109,312 / 51,837,952 / 200,227,840 parameters, the
trainable ones of fairchem's models, whose ``num_params`` adds 3,584 / 6,656 / 6,656 frozen sphere constants).

Example:
    >>> import torch, zoo
    >>> from zoo.testing import molecule_graph
    >>> model = zoo.create_model("escn", num_layers=1, sphere_channels=8, hidden_channels=8, edge_channels=8,
    ...     lmax=2, mmax=1, num_sphere_samples=16, cutoff=5.0).double()
    >>> out = model(molecule_graph())
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([8, 3]))
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry import GaussianSmearing, edge_wigner, spherical_harmonics
from zoo.graph import edge_vectors, node_graph_index, num_graphs
from zoo.kernels.so2 import check_so2_backend, gather_rotate, rotate_back_sum
from zoo.nn import CoefficientLayout, EdgeRotation, S2Activation, S2Grid
from zoo.nn.chunking import check_max_edges, chunked_scatter_sum
from zoo.nn.graph_ops import atomic_numbers_for
from zoo.nn.so3 import LazyEdgeRotation
from zoo.registry import register_model

__all__ = [
    "ESCN",
    "EdgeBlock",
    "EnergyBlock",
    "ForceBlock",
    "LayerBlock",
    "MessageBlock",
    "SO2Block",
    "SO2OrderConv",
    "SpherePoints",
    "sphere_points",
]

ENERGY_SCALE = 0.001
EdgeFrame = Literal["deterministic", "random"]
Rotation = EdgeRotation | LazyEdgeRotation


def sphere_points(num_points: int) -> Tensor:
    r"""eSCN's sampling of the sphere: a golden-angle spiral, each point scaled by its inverse local density.

    .. math::

        u_k = (\cos\theta_k \sin\varphi_k, \sin\theta_k \sin\varphi_k, \cos\varphi_k), \quad
        \theta_k = 2\pi k / \tau, \quad \varphi_k = \arccos\big(1 - (2k + 1)/P\big), \\
        p_k = w_k\, u_k, \qquad w_k \propto \Big(\sum_{k'} e^{-|u_k - u_{k'}|^2 / 0.15}\Big)^{-1}, \quad
        \sum_k w_k = P,

    with :math:`\tau` the golden ratio (fairchem ``CalcSpherePoints``). The points are not unit vectors.

    Returns:
        ``[P, 3]`` float64.

    Example:
        >>> points = sphere_points(128)
        >>> points.shape, round(float(points.norm(dim=1).sum()), 6)
        (torch.Size([128, 3]), 128.0)
    """
    golden_ratio = (1 + 5**0.5) / 2
    k = torch.arange(num_points, dtype=torch.float64)[:, None]
    theta = 2 * math.pi * k / golden_ratio
    phi = torch.arccos(1 - 2 * (k + 0.5) / num_points)
    unit = torch.cat([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], dim=1)
    squared = torch.sum((unit[None, :, :] - unit[:, None, :]) ** 2, dim=2)  # [P, P]
    weight = 1.0 / torch.sum(torch.exp(-squared / (0.5 * 0.3)), dim=1)
    return unit * (num_points * weight / torch.sum(weight))[:, None]


class SpherePoints(nn.Module):
    r"""The sample points :math:`p_k` ``[P, 3]`` and the harmonics :math:`Y_{lm}(p_k)` ``[P, K]`` at them.

    :math:`Y` are e3nn's real spherical harmonics, ``"integral"`` normalisation, evaluated on the (non-unit)
    points as polynomials, as fairchem's ``sphharm_weights``. Both are derived constants: built in float64,
    never stored in a state dict, cast to the dtype and device of the input on use.
    """

    def __init__(self, num_points: int, lmax: int) -> None:
        super().__init__()
        self.num_points, self.lmax = num_points, lmax
        self.points = sphere_points(num_points)
        self.harmonics = spherical_harmonics(lmax, self.points, normalize=False, normalization="integral")
        self._cast: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(points [P, 3], harmonics [P, K])`` in the dtype and on the device of ``like`` (cached)."""
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = (self.points.to(like), self.harmonics.to(like))
        return self._cast[key]

    def sample(self, x: Tensor) -> Tensor:
        """Values of ``x [N, K, C]`` at the points: ``[N, P, C]``."""
        return torch.einsum("nkc, pk -> npc", x, self.tensors(x)[1])

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, lmax={self.lmax}"


class EdgeBlock(nn.Module):
    r"""Invariant edge features :math:`h_{ij} = \mathrm{SiLU}(W_e\,\mathrm{SiLU}(W_d\,\phi(r_{ij}) + e_s(z_j)
    + e_t(z_i)))` (fairchem ``EdgeBlock``: ``fc1_dist``, ``source_embedding``, ``target_embedding``,
    ``fc1_edge_attr``; ``distance_expansion`` is the model's, shared as upstream).

    Shapes: ``length [E]``, ``source_z [E]``, ``target_z [E]`` -> ``[E, C_e]``.
    """

    def __init__(self, edge_channels: int, distance_expansion: GaussianSmearing, max_num_elements: int) -> None:
        super().__init__()
        self.distance_expansion = distance_expansion
        self.fc1_dist = nn.Linear(distance_expansion.num_gaussians, edge_channels)
        self.source_embedding = nn.Embedding(max_num_elements, edge_channels)
        self.target_embedding = nn.Embedding(max_num_elements, edge_channels)
        nn.init.uniform_(self.source_embedding.weight, -0.001, 0.001)
        nn.init.uniform_(self.target_embedding.weight, -0.001, 0.001)
        self.fc1_edge_attr = nn.Linear(edge_channels, edge_channels)

    def forward(self, length: Tensor, source_z: Tensor, target_z: Tensor) -> Tensor:
        distance = self.fc1_dist(self.distance_expansion(length))
        h = nn.functional.silu(distance + self.source_embedding(source_z) + self.target_embedding(target_z))
        return nn.functional.silu(self.fc1_edge_attr(h))


class SO2OrderConv(nn.Module):
    r"""Gated SO(2) convolution of one order :math:`m > 0` (fairchem eSCN ``SO2Conv``).

    .. math:: y_{\pm m} = R\, x_{\pm m} \mp I\, x_{\mp m}, \qquad
        R = W^r_2\,\mathrm{diag}(g^r)\,W^r_1, \quad I = W^i_2\,\mathrm{diag}(g^i)\,W^i_1, \quad
        (g^r, g^i) = \mathrm{SiLU}(V h)

    (``fc1_r``, ``fc2_r``, ``fc1_i``, ``fc2_i`` bias-free; ``fc1_dist`` is :math:`V`).

    Shapes: ``x [E, 2, n]`` (rows :math:`+m`, :math:`-m`; :math:`n = (l_{max} - m + 1) C`), ``edge [E, C_e]``
    -> ``[E, 2, n]``.
    """

    def __init__(self, num_features: int, hidden_channels: int, edge_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.fc1_dist = nn.Linear(edge_channels, 2 * hidden_channels)
        self.fc1_r = nn.Linear(num_features, hidden_channels, bias=False)
        self.fc2_r = nn.Linear(hidden_channels, num_features, bias=False)
        self.fc1_i = nn.Linear(num_features, hidden_channels, bias=False)
        self.fc2_i = nn.Linear(hidden_channels, num_features, bias=False)

    def forward(self, x: Tensor, edge: Tensor) -> Tensor:
        gates = nn.functional.silu(self.fc1_dist(edge)).reshape(-1, 2, self.hidden_channels)  # [E, (r, i), H]
        real = self.fc2_r(self.fc1_r(x) * gates[:, 0:1])  # [E, 2, n]
        imag = self.fc2_i(self.fc1_i(x) * gates[:, 1:2])
        return torch.stack([real[:, 0] - imag[:, 1], real[:, 1] + imag[:, 0]], dim=1)


class SO2Block(nn.Module):
    r"""SO(2) convolutions of all orders :math:`m \le m_{max}` of one edge-frame message (fairchem ``SO2Block``).

    :math:`m = 0`: ``fc2_m0((fc1_m0 x) * SiLU(fc1_dist0 h))``; :math:`m > 0`: ``so2_conv[m - 1]``
    (:class:`SO2OrderConv`). Works in the order-major layout (:class:`~zoo.nn.CoefficientLayout`).

    Shapes: ``x [E, K_r, C]`` (reduced, order-major, in the edge frames), ``edge [E, C_e]`` -> ``[E, K_r, C]``.
    """

    def __init__(
        self, sphere_channels: int, hidden_channels: int, edge_channels: int, layout: CoefficientLayout
    ) -> None:
        super().__init__()
        self.sphere_channels, self.order_sizes = sphere_channels, layout.order_sizes
        m0_features = self.order_sizes[0] * sphere_channels
        self.fc1_dist0 = nn.Linear(edge_channels, hidden_channels)
        self.fc1_m0 = nn.Linear(m0_features, hidden_channels, bias=False)
        self.fc2_m0 = nn.Linear(hidden_channels, m0_features, bias=False)
        self.so2_conv = nn.ModuleList(
            SO2OrderConv(size * sphere_channels, hidden_channels, edge_channels) for size in self.order_sizes[1:]
        )

    def forward(self, x: Tensor, edge: Tensor) -> Tensor:
        num_edges, size_0 = x.shape[0], self.order_sizes[0]
        x_0 = self.fc1_m0(x[:, :size_0].reshape(num_edges, -1)) * nn.functional.silu(self.fc1_dist0(edge))
        out = [self.fc2_m0(x_0).reshape(num_edges, size_0, self.sphere_channels)]
        offset = size_0
        for size, conv in zip(self.order_sizes[1:], self.so2_conv, strict=True):
            x_m = x[:, offset : offset + 2 * size].reshape(num_edges, 2, -1)  # [E, (+m, -m), n]
            out.append(conv(x_m, edge).reshape(num_edges, 2 * size, self.sphere_channels))
            offset += 2 * size
        return torch.cat(out, dim=1)


class MessageBlock(nn.Module):
    r"""Messages of one layer summed at the targets (fairchem ``MessageBlock``):
    :math:`a_i = \sum_j D_{ij}^T \sigma_{S^2}(\mathrm{SO2}_s(D_{ij} x_j) + \mathrm{SO2}_t(D_{ij} x_i))`.

    Submodules: ``edge_block`` (:class:`EdgeBlock`), ``so2_block_source``, ``so2_block_target``
    (:class:`SO2Block`); the activation's grid (reduced layout) is shared by all layers.

    With ``edge_chunk_size`` set (``None`` by default; :meth:`ESCN.set_edge_chunk_size`) and more edges than
    that, :meth:`edge_messages` runs for chunks of whole targets at a time
    (:func:`zoo.nn.chunking.chunked_scatter_sum`); ``rotation`` may then be built per chunk
    (:class:`~zoo.nn.so3.LazyEdgeRotation`).

    Shapes: ``x [N, K, C]``, ``z [N]``, ``length [E]``, ``edge_index [2, E]`` -> ``[N, K, C]``.
    """

    def __init__(
        self,
        sphere_channels: int,
        hidden_channels: int,
        edge_channels: int,
        layout: CoefficientLayout,
        distance_expansion: GaussianSmearing,
        max_num_elements: int,
        grid: S2Grid,
    ) -> None:
        super().__init__()
        self.sphere_channels = sphere_channels
        self.edge_chunk_size: int | None = None
        self.backend: str | None = None  # zoo.kernels SO(2) rotation backend (ESCN.set_backend)
        self.edge_block = EdgeBlock(edge_channels, distance_expansion, max_num_elements)
        self.so2_block_source = SO2Block(sphere_channels, hidden_channels, edge_channels, layout)
        self.so2_block_target = SO2Block(sphere_channels, hidden_channels, edge_channels, layout)
        self.act = S2Activation(grid)
        self.register_buffer("to_order_major", layout.to_order_major, persistent=False)
        self.register_buffer("to_degree_major", layout.to_degree_major, persistent=False)

    def edge_messages(
        self,
        x: Tensor,
        z: Tensor,
        length: Tensor,
        edge_index: Tensor,
        rotation: EdgeRotation,
        *,
        rotate_back: bool = True,
    ) -> Tensor:
        r"""The messages :math:`D_{ij}^T \sigma_{S^2}(\ldots)` of the edges, ``[E, K, C]``, before the sum
        (``rotate_back=False``: still in the edge frames, ``[E, K_r, C]``).

        With ``backend`` set the two ends are gathered and rotated by :func:`zoo.kernels.gather_rotate`."""
        source, target = edge_index
        edge = self.edge_block(length, z[source], z[target])  # [E, C_e]
        if self.backend is None:
            rotated = rotation.rotate(torch.cat([x[source], x[target]], dim=2))  # [E, K_r, 2C]
            x_source, x_target = rotated[:, self.to_order_major].split(self.sphere_channels, dim=2)
        else:
            x_source, x_target = (
                gather_rotate(x, rotation.wigner_in, index, backend=self.backend)[:, self.to_order_major]
                for index in (source, target)
            )
        message = self.so2_block_source(x_source, edge) + self.so2_block_target(x_target, edge)
        message = self.act(message[:, self.to_degree_major])
        return rotation.rotate_back(message) if rotate_back else message  # [E, K, C] or [E, K_r, C]

    def forward(self, x: Tensor, z: Tensor, length: Tensor, edge_index: Tensor, rotation: Rotation) -> Tensor:
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
            return chunked_scatter_sum(
                lambda chunk: self.edge_messages(x, z, length[chunk.edges], chunk.edge_index, rotation[chunk.edges]),
                edge_index,
                x.shape[0],
                self.edge_chunk_size,
            )
        if self.backend is not None:
            message = self.edge_messages(x, z, length, edge_index, rotation, rotate_back=False)
            return rotate_back_sum(message, rotation.wigner_out, edge_index[1], x.shape[0], backend=self.backend)
        message = self.edge_messages(x, z, length, edge_index, rotation)
        return message.new_zeros(x.shape[0], *message.shape[1:]).index_add_(0, edge_index[1], message)


class LayerBlock(nn.Module):
    r"""One eSCN layer's update :math:`F\,\mathrm{MLP}([G x_i, G a_i])` (fairchem ``LayerBlock``): the messages
    (``message_block``) and a bias-free point-wise MLP ``fc1_sphere`` (:math:`2C \to C`), ``fc2_sphere``,
    ``fc3_sphere`` on the :math:`S^2` grid of all coefficients. The caller adds the residual.

    Shapes: ``x [N, K, C]`` -> ``[N, K, C]``.
    """

    def __init__(self, message_block: MessageBlock, sphere_channels: int, grid: S2Grid) -> None:
        super().__init__()
        self.message_block, self.grid = message_block, grid
        self.fc1_sphere = nn.Linear(2 * sphere_channels, sphere_channels, bias=False)
        self.fc2_sphere = nn.Linear(sphere_channels, sphere_channels, bias=False)
        self.fc3_sphere = nn.Linear(sphere_channels, sphere_channels, bias=False)

    def forward(self, x: Tensor, z: Tensor, length: Tensor, edge_index: Tensor, rotation: Rotation) -> Tensor:
        message = self.message_block(x, z, length, edge_index, rotation)
        values = torch.cat([self.grid.to_grid(x), self.grid.to_grid(message)], dim=3)  # [N, n_beta, n_alpha, 2C]
        values = nn.functional.silu(self.fc2_sphere(nn.functional.silu(self.fc1_sphere(values))))
        return self.grid.from_grid(self.fc3_sphere(values))


class _SphereHead(nn.Module):
    """``fc1``, ``fc2`` with SiLU and a bias-free ``fc3`` to one output, applied at every sample point."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(num_channels, num_channels)
        self.fc2 = nn.Linear(num_channels, num_channels)
        self.fc3 = nn.Linear(num_channels, 1, bias=False)

    def point_values(self, values: Tensor) -> Tensor:
        """The MLP at every point, ``[N, P, C]`` -> ``[N, P]``."""
        return self.fc3(nn.functional.silu(self.fc2(nn.functional.silu(self.fc1(values))))).squeeze(-1)


class EnergyBlock(_SphereHead):
    r"""Per-atom energy :math:`\frac{1}{P}\sum_k \mathrm{MLP}(v_{ik})` (fairchem ``EnergyBlock``).

    Shapes: ``values [N, P, C]`` -> ``[N]``.
    """

    def forward(self, values: Tensor) -> Tensor:
        return self.point_values(values).mean(dim=1)


class ForceBlock(_SphereHead):
    r"""Per-atom force :math:`\frac{1}{P}\sum_k \mathrm{MLP}(v_{ik})\, p_k` (fairchem ``ForceBlock``).

    Shapes: ``values [N, P, C]``, ``points [P, 3]`` -> ``[N, 3]``.
    """

    def forward(self, values: Tensor, points: Tensor) -> Tensor:
        return self.point_values(values) @ points / points.shape[0]


class ESCN(nn.Module):
    r"""eSCN interatomic potential with direct energy and force heads.

    Reads ``pos``, ``z``, ``edge_index``, ``edge_shift`` and ``cell`` (build the edges with
    ``zoo.graph.radius_graph(graph, model.metadata["cutoff"], max_neighbors=model.metadata["max_neighbors"])``).
    Returns ``{"energy": [B], "forces": [N, 3]}`` in the checkpoint's units (eV, eV/Å for fairchem's).

    Args:
        max_neighbors, cutoff: the neighbour list the model was trained with (``cutoff`` also bounds the
            Gaussians).
        max_num_elements: size of the element embeddings; atomic numbers must be below it.
        num_layers: number of :class:`LayerBlock` layers.
        lmax, mmax: degrees kept on nodes, orders kept in the edge frames.
        sphere_channels: :math:`C`.
        hidden_channels: width of the SO(2) convolutions' gated middle layers.
        edge_channels: :math:`C_e`, width of the invariant edge features.
        num_sphere_samples: :math:`P`, points sampled by the output heads.
        basis_width_scalar: Gaussian width in units of their spacing.
        distance_resolution: spacing of the Gaussians in Å; there are ``int(cutoff / distance_resolution)``.
        resolution: :math:`S^2` grid size (``None``: fairchem's default from lmax, mmax).
        energy_mean, energy_std, forces_mean, forces_std: the output normaliser :math:`(\mu, \sigma)`.
        use_element_references: add the per-element energies of the buffer ``energy_references``
            [max_num_elements] (eV).
        regress_forces: build and run the force head.
        edge_frame: default roll of the edge frames, ``"deterministic"`` or fairchem's ``"random"``.

    Memory: with ``edge_chunk_size`` set (:meth:`set_edge_chunk_size`, ``None`` by default) and more edges than
    that, the messages of every layer run chunk by chunk (:mod:`zoo.nn.chunking`), the Wigner matrices of the
    edge frames included, equal to round-off.
    """

    reads = ("pos", "z", "edge_index", "edge_shift", "cell")

    def __init__(
        self,
        *,
        max_neighbors: int = 20,
        cutoff: float = 12.0,
        max_num_elements: int = 90,
        num_layers: int = 12,
        lmax: int = 6,
        mmax: int = 2,
        sphere_channels: int = 128,
        hidden_channels: int = 256,
        edge_channels: int = 128,
        num_sphere_samples: int = 128,
        basis_width_scalar: float = 2.0,
        distance_resolution: float = 0.02,
        resolution: int | None = None,
        energy_mean: float = 0.0,
        energy_std: float = 1.0,
        forces_mean: float = 0.0,
        forces_std: float = 1.0,
        use_element_references: bool = False,
        regress_forces: bool = True,
        edge_frame: EdgeFrame = "deterministic",
    ) -> None:
        super().__init__()
        if edge_frame not in ("deterministic", "random"):
            raise ValueError(f"edge_frame must be 'deterministic' or 'random', got {edge_frame!r}")
        self.max_num_elements, self.lmax, self.num_layers = max_num_elements, lmax, num_layers
        self.energy_mean, self.energy_std = energy_mean, energy_std
        self.forces_mean, self.forces_std = forces_mean, forces_std
        self.use_element_references, self.regress_forces = use_element_references, regress_forces
        self.edge_frame = edge_frame
        self.edge_chunk_size: int | None = None
        self.layout = CoefficientLayout(lmax, mmax)
        self.grid_reduced = S2Grid(lmax, mmax, resolution=resolution, normalization="integral", rescale=False)
        self.grid_full = S2Grid(lmax, lmax, resolution=resolution, normalization="integral", rescale=False)
        self.sphere_embedding = nn.Embedding(max_num_elements, sphere_channels)
        num_gaussians = int(cutoff / distance_resolution)
        self.distance_expansion = GaussianSmearing(0.0, cutoff, num_gaussians, basis_width_scalar)
        message: dict[str, Any] = dict(
            layout=self.layout,
            distance_expansion=self.distance_expansion,
            max_num_elements=max_num_elements,
            grid=self.grid_reduced,
        )
        self.layer_blocks = nn.ModuleList(
            LayerBlock(
                MessageBlock(sphere_channels, hidden_channels, edge_channels, **message),
                sphere_channels,
                self.grid_full,
            )
            for _ in range(num_layers)
        )
        self.energy_block = EnergyBlock(sphere_channels)
        if regress_forces:
            self.force_block = ForceBlock(sphere_channels)
        self.sphere = SpherePoints(num_sphere_samples, lmax)
        if use_element_references:
            self.register_buffer("energy_references", torch.zeros(max_num_elements))
        self.metadata = {
            "task": "potential",
            "cutoff": float(cutoff),
            "max_neighbors": int(max_neighbors),
            "max_num_elements": int(max_num_elements),
            "elements": list(range(1, max_num_elements)),
            "units": {"energy": "eV", "forces": "eV/A", "pos": "A"},
            "force_mode": "direct",
        }

    def set_edge_chunk_size(self, max_edges: int | None) -> None:
        """Compute the messages of every layer for at most ``max_edges`` edges at a time (whole targets;
        ``None``: all at once).

        Peak memory then scales with ``max_edges`` instead of the number of edges: the messages, the edge
        features and the Wigner matrices of the edge frames are built per chunk (the Wigner matrices once per
        chunk and layer). Results are equal to round-off; with gradients recorded each chunk is recomputed in
        the backward pass (:mod:`zoo.nn.chunking`). A runtime setting, not part of the checkpoint; the ASE
        calculator's and :func:`zoo.predict`'s ``max_edges_per_chunk`` set it for their calls.
        """
        self.edge_chunk_size = check_max_edges(max_edges)
        for module in self.modules():
            if isinstance(module, MessageBlock):
                module.edge_chunk_size = self.edge_chunk_size

    def set_backend(self, backend: str | None) -> None:
        """Rotate the edge coefficients with :func:`zoo.kernels.gather_rotate` / :func:`zoo.kernels.rotate_back_sum`
        (``"auto"``, ``"torch"``, ``"triton"``), which never form the ``[E, K, C]`` gathered and rotated-back
        tensors, or with the model's own ``bmm`` + ``index_add_`` (``None``, default). A runtime setting, not
        part of the checkpoint; results equal to round-off. Edge chunking, when set and needed, takes precedence.

        Raises:
            KernelError: a backend the SO(2) kernels do not have.
        """
        check_so2_backend(backend)
        for module in self.modules():
            if isinstance(module, MessageBlock):
                module.backend = backend

    def _check(self, graph: Data) -> Tensor:
        """Validate the graph's fields, dtype and atomic numbers; return ``z`` as long."""
        return atomic_numbers_for(
            graph,
            model="eSCN",
            reads=self.reads,
            dtype=self.sphere_embedding.weight.dtype,
            max_num_elements=self.max_num_elements,
        )

    def embed(self, graph: Data, perpendicular: Tensor | None = None) -> Tensor:
        r"""The backbone: final node features ``[N, K, C]``.

        ``perpendicular [E, 3]`` fixes the roll of every edge frame (default: ``edge_frame``).
        """
        z = self._check(graph)
        vec, length = edge_vectors(graph)
        frame = self.edge_frame if perpendicular is None else perpendicular
        rotation: Rotation
        if self.edge_chunk_size is not None and graph.edge_index.shape[1] > self.edge_chunk_size:
            rotation = LazyEdgeRotation(vec, self.layout, perpendicular=frame, rescale=False)  # built per chunk
        else:
            wigner, _ = edge_wigner(vec.detach(), self.lmax, perpendicular=frame)
            rotation = EdgeRotation.from_wigner(wigner, self.layout, rescale=False)
        embedding = self.sphere_embedding(z)  # [N, C]
        x = embedding.new_zeros(z.shape[0], (self.lmax + 1) ** 2, embedding.shape[1])
        x[:, 0] = embedding
        for index, block in enumerate(self.layer_blocks):
            update = block(x, z, length, graph.edge_index, rotation)
            x = update if index == 0 else x + update
        return x

    def forward(self, graph: Data, *, perpendicular: Tensor | None = None) -> dict[str, Tensor]:
        """``{"energy": [B], "forces": [N, 3]}``; ``perpendicular [E, 3]`` fixes the roll of every edge frame."""
        x = self.embed(graph, perpendicular)
        values = self.sphere.sample(x)  # [N, P, C]
        node_energy = self.energy_block(values)  # [N]
        batch = node_graph_index(graph)
        energy = node_energy.new_zeros(num_graphs(graph)).index_add_(0, batch, node_energy) * ENERGY_SCALE
        energy = energy * self.energy_std + self.energy_mean
        if self.use_element_references:
            references = self.energy_references[graph.z.long()]
            energy = energy + references.new_zeros(energy.shape).index_add_(0, batch, references)
        out = {"energy": energy}
        if self.regress_forces:
            points, _ = self.sphere.tensors(values)
            out["forces"] = self.force_block(values, points) * self.forces_std + self.forces_mean
        return out


# ------------------------------------------------------------------------------------------------- variants
_OC20_COMMON: dict[str, Any] = dict(
    max_neighbors=20,
    cutoff=12.0,
    max_num_elements=90,
    sphere_channels=128,
    hidden_channels=256,
    edge_channels=128,
    num_sphere_samples=128,
    basis_width_scalar=2.0,
    distance_resolution=0.02,
)
_VARIANTS: dict[str, dict[str, Any]] = {
    "escn": {},
    "escn-l4-m2-lay12": {**_OC20_COMMON, "num_layers": 12, "lmax": 4, "mmax": 2},
    "escn-l6-m2-lay12": {**_OC20_COMMON, "num_layers": 12, "lmax": 6, "mmax": 2},
    "escn-l6-m3-lay20": {
        **_OC20_COMMON,
        "num_layers": 20,
        "lmax": 6,
        "mmax": 3,
        "sphere_channels": 160,
        "hidden_channels": 384,
    },
}


def _create_escn(variant: str, **kwargs: Any) -> ESCN:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    return ESCN(**{**_VARIANTS[variant], **kwargs})


@register_model("escn", task="potential")
def escn(**kwargs: Any) -> ESCN:
    """eSCN (Passaro and Zitnick 2023), any configuration: direct energy and forces."""
    return _create_escn("escn", **kwargs)


@register_model("escn-l4-m2-lay12", task="potential")
def escn_l4_m2_lay12(**kwargs: Any) -> ESCN:
    """eSCN L4-M2-Lay12 (OC20 S2EF 2M): 12 layers, lmax 4, mmax 2, 36,109,312 parameters."""
    return _create_escn("escn-l4-m2-lay12", **kwargs)


@register_model("escn-l6-m2-lay12", task="potential")
def escn_l6_m2_lay12(**kwargs: Any) -> ESCN:
    """eSCN L6-M2-Lay12 (OC20 S2EF 2M and All+MD, ODAC23 S2EF): 12 layers, lmax 6, mmax 2, 51,837,952 parameters."""
    return _create_escn("escn-l6-m2-lay12", **kwargs)


@register_model("escn-l6-m3-lay20", task="potential")
def escn_l6_m3_lay20(**kwargs: Any) -> ESCN:
    """eSCN L6-M3-Lay20 (OC20 S2EF All+MD): 20 layers, lmax 6, mmax 3, 160 channels, 200,227,840 parameters."""
    return _create_escn("escn-l6-m3-lay20", **kwargs)
