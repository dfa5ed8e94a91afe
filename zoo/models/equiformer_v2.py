r"""EquiformerV2: equivariant graph attention over SO(2) convolutions (Liao, Wood, Das and Smidt, ICLR 2024).

Node features are spherical channels :math:`x_i \in \mathbb{R}^{K \times C}`, :math:`K = (l_{max}+1)^2`
(:mod:`zoo.nn.so3`). The arithmetic and parameter names follow fairchem 1.x (``equiformer_v2``, the
monolithic ``EquiformerV2`` of the OC20 checkpoints and ``EquiformerV2Backbone`` + heads of the later ones),
so converted state dicts load with ``strict=True`` (:func:`zoo.converters.fairchem.convert_state_dict`):

.. math::

    x_i^{(0)} &= \mathrm{Emb}(z_i)\,\delta_{l0}
      + \frac{1}{\bar d} \sum_{j} D(R_{ij})^T \big[\phi(r_{ij}, z_i, z_j)\big]_{m=0} \\
    x^{(t+1)} &= x' + \mathrm{FFN}(\mathrm{Norm}_2(x')), \quad
      x' = x^{(t)} + \mathrm{Attn}(\mathrm{Norm}_1(x^{(t)})) \\
    \mathrm{Attn}(x)_i &= W_{proj} \sum_j \alpha_{ij}\, D(R_{ij})^T\,
      \mathrm{SO2}_2\Big(\sigma_{S^2}\big(\mathrm{SO2}_1(D(R_{ij})\,[x_j, x_i];\ r_{ij}, z_i, z_j)\big)\Big), \qquad
      \alpha_{ij} = \mathrm{softmax}_j\, a^T \mathrm{LeakyReLU}(\mathrm{LN}(s_{ij}))

with :math:`D(R_{ij})` the Wigner matrices of the edge frames (orders :math:`|m| > m_{max}` dropped in the
frame), :math:`s_{ij}` extra :math:`m = 0` outputs of :math:`\mathrm{SO2}_1` (one vector per head),
:math:`\sigma_{S^2}` the separable S2 activation and the FFN a degree-wise linear map, an MLP on the
:math:`S^2` grid and another linear map. Outputs (direct, not gradients):

.. math:: E = \sigma_E \Big(\frac{1}{\bar n}\sum_i \mathrm{FFN}_E(x_i)_{00}\Big) + \mu_E + \sum_i e_{z_i},
    \qquad F_i = \sigma_F\, \mathrm{Attn}_F(x)_{i, l=1} + \mu_F

with :math:`\bar n = 77.81317`, :math:`\bar d = 23.395` (IS2RE statistics fixed upstream), the
normaliser :math:`(\mu, \sigma)` of the checkpoint and per-element references :math:`e_z` (OC22 linear
references, OMat element references). With ``stress_head`` (the OMat24 checkpoints) a third head,
:class:`~zoo.nn.rank2.Rank2SymmetricHead`, predicts the stress directly from the same features.

With ``dens`` the model is fairchem's DeNS variant (denoising non-equilibrium structures, Liao et al. 2024;
``EqV2DeNSBackbone`` and its heads): training encodes the forces of a noised structure into the initial
features, :math:`x_i^{(0)} \mathrel{+}= W_F\,(|f_i| / \sqrt 3)\, Y(\hat f_i) + b_F`, and predicts the noise
with a twin of the force head, ``denoising_pos_block``. On a clean structure (inference) the encoded force is
zero, so only the bias :math:`b_F` of ``force_embedding`` reaches the degree-0 features (and the bias of
``noise_schedule_sigma_embedding`` with ``dens_sigma_encoding``), and fairchem's force output is
``0 * denoising + forces``: zoo adds the biases and does not run the twin, whose weights it keeps.

The edge frames' roll about each edge is a free choice (``edge_frame``): fairchem draws it at random at every
call; zoo uses a deterministic choice by default. The S2 activations are only approximately invariant to it,
so outputs move by about :math:`10^{-5}` eV/Å between choices (see UPSTREAM-NOTES); pass ``perpendicular=``
to ``forward`` to reproduce a given draw.

Registered architectures: ``equiformer_v2`` (any configuration) and ``equiformer_v2-31m``,
``equiformer_v2-83m``, ``equiformer_v2-153m``, ``equiformer_v2-121m-oc22`` (the published sizes; 31,058,690 /
83,164,802 / 153,602,690 parameters for the OC20 ones).

Example:
    >>> import torch, zoo
    >>> from zoo.testing import molecule_graph
    >>> model = zoo.create_model("equiformer_v2", num_layers=1, sphere_channels=8, attn_hidden_channels=8,
    ...     num_heads=2, attn_alpha_channels=4, attn_value_channels=4, ffn_hidden_channels=8, lmax=2, mmax=1,
    ...     edge_channels=8, grid_resolution=6).double()
    >>> out = model(molecule_graph())
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([8, 3]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry import GaussianSmearing, edge_wigner
from zoo.graph import edge_vectors, node_graph_index, num_graphs
from zoo.kernels.so2 import check_so2_backend, gather_rotate, rotate_back_sum
from zoo.nn import (
    CoefficientLayout,
    EdgeRotation,
    GateActivation,
    NormType,
    RadialMLP,
    S2Activation,
    S2Grid,
    SeparableS2Activation,
    SmoothLeakyReLU,
    SO2Convolution,
    SO3Linear,
    equivariant_norm,
    segment_softmax,
)
from zoo.nn.chunking import EdgeChunk, check_max_edges, chunked_scatter_sum
from zoo.nn.graph_ops import atomic_numbers_for
from zoo.nn.rank2 import Rank2SymmetricHead
from zoo.nn.so3 import LazyEdgeRotation
from zoo.registry import register_model

__all__ = [
    "EdgeDegreeEmbedding",
    "EquiformerV2",
    "FeedForwardNetwork",
    "LazyEdgeValues",
    "SO2EquivariantGraphAttention",
    "TransBlockV2",
]

AVG_NUM_NODES = 77.81317
AVG_DEGREE = 23.395238876342773
EdgeFrame = Literal["deterministic", "random"]


class LazyEdgeValues:
    """A per-edge tensor computed when asked for: ``lazy[edges] == fn(values[edges])``, never held for all edges.

    The chunked model passes the distance basis (``[E, F]``, 600 numbers per edge) this way.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], values: Tensor) -> None:
        self.fn, self.values = fn, values

    def __getitem__(self, edges: slice | Tensor) -> Tensor:
        return self.fn(self.values[edges])


EdgeValues = Tensor | LazyEdgeValues
Rotation = EdgeRotation | LazyEdgeRotation


def _edge_embeddings(
    source_embedding: nn.Embedding, target_embedding: nn.Embedding, z: Tensor, edge_index: Tensor, rbf: Tensor
) -> Tensor:
    """``[E, F + 2 C_e]``: the distance basis with the source and target element embeddings appended."""
    return torch.cat([rbf, source_embedding(z[edge_index[0]]), target_embedding(z[edge_index[1]])], dim=1)


class EdgeDegreeEmbedding(nn.Module):
    r"""Initial features from the edges: :math:`\frac{1}{\bar d}\sum_j D(R_{ij})^T [\phi(r_{ij}, z_i, z_j)]_{m=0}`.

    ``rad_func`` (:class:`~zoo.nn.RadialMLP`) gives the :math:`m = 0` coefficients of every degree and channel
    in the edge frame; rotated back, they are a function of the edge direction only.

    With ``edge_chunk_size`` set (``None`` by default; :meth:`EquiformerV2.set_edge_chunk_size`) and more edges
    than that, the messages are computed for chunks of whole targets at a time
    (:func:`zoo.nn.chunking.chunked_scatter_sum`); ``rbf`` and ``rotation`` may then be computed per chunk
    (:class:`LazyEdgeValues`, :class:`~zoo.nn.so3.LazyEdgeRotation`).

    Shapes: ``z [N]``, ``rbf [E, F]``, ``edge_index [2, E]`` -> ``[N, K, C]``.
    """

    def __init__(
        self,
        sphere_channels: int,
        layout: CoefficientLayout,
        max_num_elements: int,
        edge_channels_list: list[int],
        rescale_factor: float,
    ) -> None:
        super().__init__()
        self.sphere_channels, self.layout, self.rescale_factor = sphere_channels, layout, rescale_factor
        self.edge_chunk_size: int | None = None
        self.backend: str | None = None  # zoo.kernels SO(2) rotation backend (EquiformerV2.set_backend)
        self.source_embedding = nn.Embedding(max_num_elements, edge_channels_list[-1])
        self.target_embedding = nn.Embedding(max_num_elements, edge_channels_list[-1])
        nn.init.uniform_(self.source_embedding.weight, -0.001, 0.001)
        nn.init.uniform_(self.target_embedding.weight, -0.001, 0.001)
        channels = [edge_channels_list[0] + 2 * edge_channels_list[-1], *edge_channels_list[1:]]
        self.rad_func = RadialMLP([*channels, layout.order_sizes[0] * sphere_channels])
        m0_rows = layout.to_order_major[: layout.order_sizes[0]]  # rows of m = 0 in the reduced layout
        self.register_buffer("m0_rows", m0_rows, persistent=False)

    def m0_messages(self, z: Tensor, rbf: Tensor, edge_index: Tensor) -> Tensor:
        """The :math:`m = 0` coefficients of the edges' messages in the edge frames, ``[E, L + 1, C]``."""
        features = _edge_embeddings(self.source_embedding, self.target_embedding, z, edge_index, rbf)
        return self.rad_func(features).reshape(-1, self.layout.order_sizes[0], self.sphere_channels)

    def edge_messages(self, z: Tensor, rbf: Tensor, edge_index: Tensor, rotation: EdgeRotation) -> Tensor:
        """The rotated-back :math:`m = 0` messages of the edges, ``[E, K, C]``, before the sum and the scaling."""
        m0 = self.m0_messages(z, rbf, edge_index)
        return rotation.wigner_out[:, :, self.m0_rows] @ m0  # only the m = 0 columns are non-zero

    def forward(self, z: Tensor, rbf: EdgeValues, edge_index: Tensor, rotation: Rotation, num_nodes: int) -> Tensor:
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
            out = chunked_scatter_sum(
                lambda chunk: self.edge_messages(z, rbf[chunk.edges], chunk.edge_index, rotation[chunk.edges]),
                edge_index,
                num_nodes,
                self.edge_chunk_size,
            )
            return out / self.rescale_factor
        if self.backend is not None:
            m0, back = self.m0_messages(z, rbf, edge_index), rotation.wigner_out[:, :, self.m0_rows]
            out = rotate_back_sum(m0, back, edge_index[1], num_nodes, backend=self.backend)
            return out / self.rescale_factor
        message = self.edge_messages(z, rbf, edge_index, rotation)
        out = message.new_zeros(num_nodes, message.shape[1], self.sphere_channels)
        return out.index_add_(0, edge_index[1], message) / self.rescale_factor


class SO2EquivariantGraphAttention(nn.Module):
    r"""Equivariant graph attention with SO(2) convolutions (fairchem ``SO2EquivariantGraphAttention``).

    Messages :math:`[x_j, x_i]` are rotated into the edge frame, passed through ``so2_conv_1`` (radial
    weights from ``rad_func`` of the distance basis and element embeddings), the separable S2 activation
    (or gate activation), ``so2_conv_2``; weighted by the attention :math:`\alpha_{ij}` per head, rotated back,
    summed at the target and projected by ``proj``. :math:`\alpha_{ij}` comes from the extra :math:`m = 0`
    outputs of ``so2_conv_1``: ``LayerNorm`` per head (``use_attn_renorm``), smooth leaky ReLU, a dot product
    with ``alpha_dot``, and a softmax over the edges of each target.

    With ``edge_chunk_size`` set (``None`` by default; :meth:`EquiformerV2.set_edge_chunk_size`) and more edges
    than that, :meth:`edge_messages` runs for chunks of whole targets at a time
    (:func:`zoo.nn.chunking.chunked_scatter_sum`); the softmax stays exact, a chunk holding every edge of its
    targets. ``rbf`` and ``rotation`` may then be computed per chunk (:class:`LazyEdgeValues`,
    :class:`~zoo.nn.so3.LazyEdgeRotation`).

    Shapes: ``x [N, K, C]``, ``z [N]``, ``rbf [E, F]``, ``edge_index [2, E]`` -> ``[N, K, C_out]``.
    """

    def __init__(
        self,
        sphere_channels: int,
        hidden_channels: int,
        num_heads: int,
        attn_alpha_channels: int,
        attn_value_channels: int,
        output_channels: int,
        layout: CoefficientLayout,
        grid: S2Grid,
        max_num_elements: int,
        edge_channels_list: list[int],
        *,
        use_attn_renorm: bool = True,
        use_gate_act: bool = False,
        use_sep_s2_act: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads, self.attn_alpha_channels = num_heads, attn_alpha_channels
        self.attn_value_channels = attn_value_channels
        self.use_gate_act, self.use_sep_s2_act = use_gate_act, use_sep_s2_act
        self.edge_chunk_size: int | None = None
        self.backend: str | None = None  # zoo.kernels SO(2) rotation backend (EquiformerV2.set_backend)
        self.source_embedding = nn.Embedding(max_num_elements, edge_channels_list[-1])
        self.target_embedding = nn.Embedding(max_num_elements, edge_channels_list[-1])
        nn.init.uniform_(self.source_embedding.weight, -0.001, 0.001)
        nn.init.uniform_(self.target_embedding.weight, -0.001, 0.001)
        channels = [edge_channels_list[0] + 2 * edge_channels_list[-1], *edge_channels_list[1:]]
        extra = num_heads * attn_alpha_channels
        if use_gate_act:
            extra += layout.lmax * hidden_channels
        elif use_sep_s2_act:
            extra += hidden_channels
        self.so2_conv_1 = SO2Convolution(
            2 * sphere_channels, hidden_channels, layout, edge_channels=channels, extra_m0_channels=extra
        )
        self.alpha_norm = nn.LayerNorm(attn_alpha_channels) if use_attn_renorm else nn.Identity()
        self.alpha_act = SmoothLeakyReLU()
        bound = attn_alpha_channels**-0.5
        self.alpha_dot = nn.Parameter(torch.empty(num_heads, attn_alpha_channels).uniform_(-bound, bound))
        if use_gate_act:
            self.gate_act = GateActivation(layout.lmax, layout.mmax, hidden_channels)
        elif use_sep_s2_act:
            self.s2_act = SeparableS2Activation(grid)
        else:
            self.s2_act = S2Activation(grid)
        self.so2_conv_2 = SO2Convolution(hidden_channels, num_heads * attn_value_channels, layout)
        self.proj = SO3Linear(num_heads * attn_value_channels, output_channels, lmax=layout.lmax)

    def edge_messages(
        self,
        x: Tensor,
        z: Tensor,
        rbf: Tensor,
        edge_index: Tensor,
        rotation: EdgeRotation,
        target: Tensor,
        num_nodes: int,
        *,
        rotate_back: bool = True,
    ) -> Tensor:
        r"""The attention-weighted messages :math:`\alpha_{ij} D(R_{ij})^T \ldots` of the edges, ``[E, K, H V]``
        (``rotate_back=False``: still in the edge frames, ``[E, K_r, H V]``).

        ``target [E]`` and ``num_nodes`` index the softmax groups: ``edge_index[1]`` and ``x.shape[0]``, or a
        chunk's local targets (:attr:`zoo.nn.chunking.EdgeChunk.target`), which hold every edge of their nodes.
        With ``backend`` set the two ends are gathered and rotated by :func:`zoo.kernels.gather_rotate`.
        """
        source = edge_index[0]
        features = _edge_embeddings(self.source_embedding, self.target_embedding, z, edge_index, rbf)
        if self.backend is None:
            message = rotation.rotate(torch.cat([x[source], x[edge_index[1]]], dim=2))  # [E, K_r, 2C]
        else:
            ends = (gather_rotate(x, rotation.wigner_in, index, backend=self.backend) for index in edge_index)
            message = torch.cat(list(ends), dim=2)
        message, extra = self.so2_conv_1(message, features)
        num_alpha = self.num_heads * self.attn_alpha_channels
        alpha_features, gates = extra[:, :num_alpha], extra[:, num_alpha:]
        if self.use_gate_act:
            message = self.gate_act(gates, message)
        elif self.use_sep_s2_act:
            message = self.s2_act(gates, message)
        else:
            message = self.s2_act(message)
        message = self.so2_conv_2(message)  # [E, K_r, H * V]
        alpha_features = self.alpha_act(
            self.alpha_norm(alpha_features.reshape(-1, self.num_heads, num_alpha // self.num_heads))
        )
        alpha = segment_softmax(torch.einsum("bik, ik -> bi", alpha_features, self.alpha_dot), target, num_nodes)
        message = (
            message.reshape(*message.shape[:2], self.num_heads, self.attn_value_channels) * alpha[:, None, :, None]
        )
        message = message.reshape(*message.shape[:2], -1)  # [E, K_r, H * V]
        return rotation.rotate_back(message) if rotate_back else message

    def forward(self, x: Tensor, z: Tensor, rbf: EdgeValues, edge_index: Tensor, rotation: Rotation) -> Tensor:
        num_nodes = x.shape[0]
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:

            def chunk_messages(chunk: EdgeChunk) -> Tensor:
                return self.edge_messages(
                    x, z, rbf[chunk.edges], chunk.edge_index, rotation[chunk.edges], chunk.target, chunk.num_nodes
                )

            return self.proj(chunked_scatter_sum(chunk_messages, edge_index, num_nodes, self.edge_chunk_size))
        target = edge_index[1]
        if self.backend is not None:
            message = self.edge_messages(x, z, rbf, edge_index, rotation, target, num_nodes, rotate_back=False)
            return self.proj(rotate_back_sum(message, rotation.wigner_out, target, num_nodes, backend=self.backend))
        message = self.edge_messages(x, z, rbf, edge_index, rotation, target, num_nodes)
        out = message.new_zeros(num_nodes, *message.shape[1:]).index_add_(0, target, message)
        return self.proj(out)


class FeedForwardNetwork(nn.Module):
    r"""Feed-forward network of spherical channels (fairchem ``FeedForwardNetwork``).

    With ``use_grid_mlp`` (the published models): ``so3_linear_1``, a 3-layer bias-free MLP ``grid_mlp``
    applied point-wise on the :math:`S^2` grid, degree 0 replaced by ``scalar_mlp`` of the input scalars
    (``use_sep_s2_act``), ``so3_linear_2``. Otherwise a gate or (separable) S2 activation in the middle.

    Shapes: ``[N, K, C]`` -> ``[N, K, C_out]``.
    """

    def __init__(
        self,
        sphere_channels: int,
        hidden_channels: int,
        output_channels: int,
        lmax: int,
        grid: S2Grid,
        *,
        use_gate_act: bool = False,
        use_grid_mlp: bool = False,
        use_sep_s2_act: bool = True,
    ) -> None:
        super().__init__()
        self.grid, self.use_gate_act, self.use_grid_mlp = grid, use_gate_act, use_grid_mlp
        self.use_sep_s2_act = use_sep_s2_act
        self.so3_linear_1 = SO3Linear(sphere_channels, hidden_channels, lmax=lmax)
        self.gating_linear: nn.Linear | None = None
        if use_grid_mlp:
            if use_sep_s2_act:
                self.scalar_mlp = nn.Sequential(nn.Linear(sphere_channels, hidden_channels), nn.SiLU())
            self.grid_mlp = nn.Sequential(
                nn.Linear(hidden_channels, hidden_channels, bias=False),
                nn.SiLU(),
                nn.Linear(hidden_channels, hidden_channels, bias=False),
                nn.SiLU(),
                nn.Linear(hidden_channels, hidden_channels, bias=False),
            )
        elif use_gate_act:
            self.gating_linear = nn.Linear(sphere_channels, lmax * hidden_channels)
            self.gate_act = GateActivation(lmax, lmax, hidden_channels)
        elif use_sep_s2_act:
            self.gating_linear = nn.Linear(sphere_channels, hidden_channels)
            self.s2_act = SeparableS2Activation(grid)
        else:
            self.s2_act = S2Activation(grid)
        self.so3_linear_2 = SO3Linear(hidden_channels, output_channels, lmax=lmax)

    def forward(self, x: Tensor) -> Tensor:
        scalars = x[:, 0]  # [N, C]
        h = self.so3_linear_1(x)
        if self.use_grid_mlp:
            h = self.grid.from_grid(self.grid_mlp(self.grid.to_grid(h)))
            if self.use_sep_s2_act:
                h = torch.cat([self.scalar_mlp(scalars)[:, None], h[:, 1:]], dim=1)
        elif self.use_gate_act:
            h = self.gate_act(self.gating_linear(scalars), h)
        elif self.use_sep_s2_act:
            h = self.s2_act(self.gating_linear(scalars), h)
        else:
            h = self.s2_act(h)
        return self.so3_linear_2(h)


class TransBlockV2(nn.Module):
    r"""One EquiformerV2 layer: :math:`x' = x + \mathrm{Attn}(\mathrm{Norm}_1 x)`,
    :math:`x'' = x' + \mathrm{FFN}(\mathrm{Norm}_2 x')` (``norm_1``, ``ga``, ``norm_2``, ``ffn``)."""

    def __init__(self, norm_1: nn.Module, ga: SO2EquivariantGraphAttention, norm_2: nn.Module, ffn: nn.Module) -> None:
        super().__init__()
        self.norm_1, self.ga, self.norm_2, self.ffn = norm_1, ga, norm_2, ffn

    def forward(self, x: Tensor, z: Tensor, rbf: EdgeValues, edge_index: Tensor, rotation: Rotation) -> Tensor:
        x = x + self.ga(self.norm_1(x), z, rbf, edge_index, rotation)
        return x + self.ffn(self.norm_2(x))


class EquiformerV2(nn.Module):
    r"""EquiformerV2 interatomic potential with direct energy, force and (optionally) stress heads.

    Reads ``pos``, ``z``, ``edge_index``, ``edge_shift`` and ``cell`` (build the edges with
    ``zoo.graph.radius_graph(graph, model.metadata["cutoff"], max_neighbors=model.metadata["max_neighbors"],
    strict_max_neighbors=model.metadata["strict_max_neighbors"])``). Returns ``{"energy": [B], "forces": [N, 3]}``
    and, with a stress head, ``"stress": [B, 3, 3]`` in the checkpoint's units (eV, eV/Å, eV/Å³ for fairchem's).

    Args:
        max_neighbors, max_radius: the neighbour list the model was trained with (metadata only).
        enforce_max_neighbors_strictly: fairchem's flag of the same name (metadata ``strict_max_neighbors``):
            ``False`` keeps every neighbour about as close as the one after the ``max_neighbors``-th
            (:func:`zoo.graph.neighbor_list`), as the OC22 and OMat24 models were trained.
        max_num_elements: size of the element embeddings; atomic numbers must be below it.
        num_layers: number of :class:`TransBlockV2` layers.
        sphere_channels: :math:`C`.
        attn_hidden_channels: channels between the two SO(2) convolutions of the attention.
        num_heads, attn_alpha_channels, attn_value_channels: attention heads and their widths.
        ffn_hidden_channels: hidden channels of the FFN.
        norm_type: ``"layer_norm"``, ``"layer_norm_sh"`` or ``"rms_norm_sh"``.
        lmax, mmax: degrees kept on nodes, orders kept in the edge frames.
        grid_resolution: :math:`S^2` grid size (``None``: fairchem's default from lmax, mmax).
        edge_channels: hidden width of the radial functions.
        num_distance_basis: Gaussians on :math:`[0, r_{max}]` (600 in every fairchem model).
        use_attn_renorm, use_gate_act, use_grid_mlp, use_sep_s2_act: fairchem's switches.
        avg_num_nodes, avg_degree: :math:`\bar n` and :math:`\bar d`.
        energy_mean, energy_std, forces_mean, forces_std: the output normaliser :math:`(\mu, \sigma)`.
        use_element_references: add the per-element energies of the buffer ``energy_references``
            [max_num_elements] (eV).
        regress_forces: build and run the force head.
        stress_head: keyword arguments of a :class:`~zoo.nn.rank2.Rank2SymmetricHead` (its normalisers
            included) to predict the stress; ``None``: no stress.
        edge_frame: default roll of the edge frames, ``"deterministic"`` or fairchem's ``"random"``.
        dens: the DeNS variant: hold ``force_embedding`` (an :class:`~zoo.nn.SO3Linear` from one channel)
            and, with the force head, ``denoising_pos_block``; predict as fairchem does for clean structures.
        dens_sigma_encoding: with ``dens``, hold ``noise_schedule_sigma_embedding`` (fairchem's
            ``use_noise_schedule_sigma_encoding``; a zero noise level adds its bias to the degree-0 features).

    Memory: with ``edge_chunk_size`` set (:meth:`set_edge_chunk_size`, ``None`` by default) and more edges than
    that, every per-edge computation runs chunk by chunk (:mod:`zoo.nn.chunking`), the distance basis and the
    Wigner matrices included, equal to round-off.
    """

    reads = ("pos", "z", "edge_index", "edge_shift", "cell")

    def __init__(
        self,
        *,
        max_neighbors: int = 20,
        enforce_max_neighbors_strictly: bool = True,
        max_radius: float = 12.0,
        max_num_elements: int = 90,
        num_layers: int = 12,
        sphere_channels: int = 128,
        attn_hidden_channels: int = 128,
        num_heads: int = 8,
        attn_alpha_channels: int = 32,
        attn_value_channels: int = 16,
        ffn_hidden_channels: int = 512,
        norm_type: NormType = "rms_norm_sh",
        lmax: int = 6,
        mmax: int = 2,
        grid_resolution: int | None = None,
        edge_channels: int = 128,
        num_distance_basis: int = 600,
        use_attn_renorm: bool = True,
        use_gate_act: bool = False,
        use_grid_mlp: bool = False,
        use_sep_s2_act: bool = True,
        avg_num_nodes: float = AVG_NUM_NODES,
        avg_degree: float = AVG_DEGREE,
        energy_mean: float = 0.0,
        energy_std: float = 1.0,
        forces_mean: float = 0.0,
        forces_std: float = 1.0,
        use_element_references: bool = False,
        regress_forces: bool = True,
        stress_head: Mapping[str, Any] | None = None,
        edge_frame: EdgeFrame = "deterministic",
        dens: bool = False,
        dens_sigma_encoding: bool = False,
    ) -> None:
        super().__init__()
        if edge_frame not in ("deterministic", "random"):
            raise ValueError(f"edge_frame must be 'deterministic' or 'random', got {edge_frame!r}")
        if dens_sigma_encoding and not dens:
            raise ValueError("dens_sigma_encoding=True needs dens=True")
        self.dens, self.dens_sigma_encoding = dens, dens_sigma_encoding
        self.max_num_elements, self.lmax, self.num_layers = max_num_elements, lmax, num_layers
        self.avg_num_nodes = avg_num_nodes
        self.energy_mean, self.energy_std = energy_mean, energy_std
        self.forces_mean, self.forces_std = forces_mean, forces_std
        self.use_element_references, self.regress_forces, self.edge_frame = (
            use_element_references,
            regress_forces,
            edge_frame,
        )
        self.edge_chunk_size: int | None = None
        self.layout = CoefficientLayout(lmax, mmax)
        # Grids shared by every layer: the reduced one (attention) and the full one (FFN).
        self.grid_reduced = S2Grid(lmax, mmax, resolution=grid_resolution)
        self.grid_full = S2Grid(lmax, lmax, resolution=grid_resolution)
        self.sphere_embedding = nn.Embedding(max_num_elements, sphere_channels)
        if dens:
            self.force_embedding = SO3Linear(1, sphere_channels, lmax=lmax)
            if dens_sigma_encoding:
                self.noise_schedule_sigma_embedding = nn.Linear(1, sphere_channels)
        self.distance_expansion = GaussianSmearing(0.0, max_radius, num_distance_basis, 2.0)
        edge_channels_list = [num_distance_basis, edge_channels, edge_channels]
        self.edge_degree_embedding = EdgeDegreeEmbedding(
            sphere_channels, self.layout, max_num_elements, edge_channels_list, avg_degree
        )
        attention: dict[str, Any] = dict(
            layout=self.layout,
            grid=self.grid_reduced,
            max_num_elements=max_num_elements,
            edge_channels_list=edge_channels_list,
            use_attn_renorm=use_attn_renorm,
            use_gate_act=use_gate_act,
            use_sep_s2_act=use_sep_s2_act,
        )
        heads = (attn_hidden_channels, num_heads, attn_alpha_channels, attn_value_channels)
        ffn: dict[str, Any] = dict(
            lmax=lmax,
            grid=self.grid_full,
            use_gate_act=use_gate_act,
            use_grid_mlp=use_grid_mlp,
            use_sep_s2_act=use_sep_s2_act,
        )
        self.blocks = nn.ModuleList(
            TransBlockV2(
                equivariant_norm(norm_type, lmax, sphere_channels),
                SO2EquivariantGraphAttention(sphere_channels, *heads, sphere_channels, **attention),
                equivariant_norm(norm_type, lmax, sphere_channels),
                FeedForwardNetwork(sphere_channels, ffn_hidden_channels, sphere_channels, **ffn),
            )
            for _ in range(num_layers)
        )
        self.norm = equivariant_norm(norm_type, lmax, sphere_channels)
        self.energy_block = FeedForwardNetwork(sphere_channels, ffn_hidden_channels, 1, **ffn)
        if regress_forces:
            self.force_block = SO2EquivariantGraphAttention(sphere_channels, *heads, 1, **attention)
            if dens:
                self.denoising_pos_block = SO2EquivariantGraphAttention(sphere_channels, *heads, 1, **attention)
        self.stress_head = None
        if stress_head is not None:
            self.stress_head = Rank2SymmetricHead(sphere_channels, lmax, norm_type=norm_type, **stress_head)
        if use_element_references:
            self.register_buffer("energy_references", torch.zeros(max_num_elements))
        self.metadata = {
            "task": "potential",
            "cutoff": float(max_radius),
            "max_neighbors": int(max_neighbors),
            "strict_max_neighbors": bool(enforce_max_neighbors_strictly),
            "max_num_elements": int(max_num_elements),
            "elements": list(range(1, max_num_elements)),
            "units": {"energy": "eV", "forces": "eV/A", "pos": "A"},
            "force_mode": "direct",
        }
        if stress_head is not None:
            self.metadata["units"]["stress"] = "eV/A^3"
            self.metadata["stress"] = "direct"

    def set_edge_chunk_size(self, max_edges: int | None) -> None:
        """Compute the per-edge tensors of every layer and head for at most ``max_edges`` edges at a time
        (whole targets; ``None``: all at once).

        Peak memory then scales with ``max_edges`` instead of the number of edges: the messages, the distance
        basis and the Wigner matrices of the edge frames are built per chunk (the Wigner matrices once per chunk
        and layer). Results are equal to round-off; with gradients recorded each chunk is recomputed in the
        backward pass (:mod:`zoo.nn.chunking`). A runtime setting, not part of the checkpoint; the ASE
        calculator's and :func:`zoo.predict`'s ``max_edges_per_chunk`` set it for their calls.
        """
        self.edge_chunk_size = check_max_edges(max_edges)
        for module in self.modules():
            if isinstance(module, (EdgeDegreeEmbedding, SO2EquivariantGraphAttention, Rank2SymmetricHead)):
                module.edge_chunk_size = self.edge_chunk_size

    def set_backend(self, backend: str | None) -> None:
        """Rotate the edge coefficients of the attention blocks (force head included) and the edge-degree
        embedding with :func:`zoo.kernels.gather_rotate` / :func:`zoo.kernels.rotate_back_sum` (``"auto"``,
        ``"torch"``, ``"triton"``), which never form the ``[E, K, C]`` gathered and rotated-back tensors, or with
        the model's own ``bmm`` + ``index_add_`` (``None``, default). A runtime setting, not part of the
        checkpoint; results equal to round-off. Edge chunking, when set and needed, takes precedence.

        Raises:
            KernelError: a backend the SO(2) kernels do not have.
        """
        check_so2_backend(backend)
        for module in self.modules():
            if isinstance(module, (EdgeDegreeEmbedding, SO2EquivariantGraphAttention)):
                module.backend = backend

    def embed(
        self, graph: Data, perpendicular: Tensor | None = None
    ) -> tuple[Tensor, Tensor, EdgeValues, Tensor, Rotation]:
        r"""The backbone: final normalised node features ``[N, K, C]``, with what the heads need.

        Returns:
            ``(x [N, K, C], z [N], rbf [E, F], edge_index [2, E], rotation)``; with chunking
            (:meth:`set_edge_chunk_size`, more edges than a chunk) ``rbf`` and ``rotation`` are built per chunk
            when indexed (:class:`LazyEdgeValues`, :class:`~zoo.nn.so3.LazyEdgeRotation`).
        """
        z = atomic_numbers_for(
            graph,
            model="EquiformerV2",
            reads=self.reads,
            dtype=self.sphere_embedding.weight.dtype,
            max_num_elements=self.max_num_elements,
        )
        vec, length = edge_vectors(graph)
        frame = self.edge_frame if perpendicular is None else perpendicular
        edge_index = graph.edge_index
        rotation: Rotation
        rbf: EdgeValues
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
            rotation = LazyEdgeRotation(vec, self.layout, perpendicular=frame)  # one random draw for all layers
            rbf = LazyEdgeValues(self.distance_expansion, length)
        else:
            wigner, _ = edge_wigner(vec.detach(), self.lmax, perpendicular=frame)
            rotation = EdgeRotation.from_wigner(wigner, self.layout)
            rbf = self.distance_expansion(length)
        x = self.edge_degree_embedding(z, rbf, edge_index, rotation, z.shape[0])
        x = torch.cat([x[:, :1] + self.node_embedding(z)[:, None], x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x, z, rbf, edge_index, rotation)
        return self.norm(x), z, rbf, edge_index, rotation

    def node_embedding(self, z: Tensor) -> Tensor:
        """Degree-0 initial features from the elements, ``[N, C]``; with ``dens``, plus the DeNS encodings of a
        clean structure (zero force, zero noise level): the biases of ``force_embedding`` and
        ``noise_schedule_sigma_embedding``, added in fairchem's order."""
        node = self.sphere_embedding(z)
        if self.dens:
            node = node + self.force_embedding.bias
            if self.dens_sigma_encoding:
                node = node + self.noise_schedule_sigma_embedding.bias
        return node

    def forward(self, graph: Data, *, perpendicular: Tensor | None = None) -> dict[str, Tensor]:
        """``{"energy": [B], "forces": [N, 3], "stress": [B, 3, 3]}`` (those the model has); ``perpendicular [E, 3]``
        fixes the roll of every edge frame."""
        x, z, rbf, edge_index, rotation = self.embed(graph, perpendicular)
        node_energy = self.energy_block(x)[:, 0, 0]  # [N]
        if self.use_element_references:
            node_references = self.energy_references[z]
        batch = node_graph_index(graph)
        energy = node_energy.new_zeros(num_graphs(graph)).index_add_(0, batch, node_energy) / self.avg_num_nodes
        energy = energy * self.energy_std + self.energy_mean
        if self.use_element_references:
            energy = energy + node_references.new_zeros(energy.shape).index_add_(0, batch, node_references)
        out = {"energy": energy}
        if self.regress_forces:
            forces = self.force_block(x, z, rbf, edge_index, rotation)[:, 1:4, 0]
            out["forces"] = forces * self.forces_std + self.forces_mean
        if self.stress_head is not None:
            vec, _ = edge_vectors(graph)
            out["stress"] = self.stress_head(x, edge_index, vec, batch, energy.shape[0])
        return out


# ------------------------------------------------------------------------------------------------- variants
_OC20_COMMON: dict[str, Any] = dict(
    max_neighbors=20,
    max_radius=12.0,
    max_num_elements=90,
    sphere_channels=128,
    attn_hidden_channels=64,
    num_heads=8,
    attn_alpha_channels=64,
    attn_value_channels=16,
    ffn_hidden_channels=128,
    norm_type="layer_norm_sh",
    grid_resolution=18,
    edge_channels=128,
    use_grid_mlp=True,
)
_VARIANTS: dict[str, dict[str, Any]] = {
    "equiformer_v2": {},
    "equiformer_v2-31m": {**_OC20_COMMON, "num_layers": 8, "lmax": 4, "mmax": 2},
    "equiformer_v2-83m": {**_OC20_COMMON, "num_layers": 12, "lmax": 6, "mmax": 2},
    "equiformer_v2-153m": {**_OC20_COMMON, "num_layers": 20, "lmax": 6, "mmax": 3},
    "equiformer_v2-121m-oc22": {
        **_OC20_COMMON,
        "num_layers": 18,
        "lmax": 6,
        "mmax": 2,
        "max_radius": 12.0,
        "use_element_references": True,
        "enforce_max_neighbors_strictly": False,
    },
}


def _create_equiformer_v2(variant: str, **kwargs: Any) -> EquiformerV2:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    return EquiformerV2(**{**_VARIANTS[variant], **kwargs})


@register_model("equiformer_v2", task="potential")
def equiformer_v2(**kwargs: Any) -> EquiformerV2:
    """EquiformerV2 (Liao et al. 2024), any configuration: direct energy and forces."""
    return _create_equiformer_v2("equiformer_v2", **kwargs)


@register_model("equiformer_v2-31m", task="potential")
def equiformer_v2_31m(**kwargs: Any) -> EquiformerV2:
    """EquiformerV2 31M (OC20 S2EF): 8 layers, lmax 4, mmax 2, 31,058,690 parameters."""
    return _create_equiformer_v2("equiformer_v2-31m", **kwargs)


@register_model("equiformer_v2-83m", task="potential")
def equiformer_v2_83m(**kwargs: Any) -> EquiformerV2:
    """EquiformerV2 83M (OC20 S2EF 2M): 12 layers, lmax 6, mmax 2, 83,164,802 parameters."""
    return _create_equiformer_v2("equiformer_v2-83m", **kwargs)


@register_model("equiformer_v2-153m", task="potential")
def equiformer_v2_153m(**kwargs: Any) -> EquiformerV2:
    """EquiformerV2 153M (OC20 S2EF All+MD): 20 layers, lmax 6, mmax 3, 153,602,690 parameters."""
    return _create_equiformer_v2("equiformer_v2-153m", **kwargs)


@register_model("equiformer_v2-121m-oc22", task="potential")
def equiformer_v2_121m_oc22(**kwargs: Any) -> EquiformerV2:
    """EquiformerV2 121M (OC22 S2EF): 18 layers, lmax 6, mmax 2, with linear energy references."""
    return _create_equiformer_v2("equiformer_v2-121m-oc22", **kwargs)
