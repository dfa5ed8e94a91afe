r"""Direct prediction of a symmetric rank-2 tensor per graph (stress) from spherical-channel node features.

The head of fairchem 1.x's ``rank2_symmetric_head`` (``Rank2SymmetricTensorHead`` with ``decompose=True``, as
in the OMat24 EquiformerV2 checkpoints), with the trainer's recombination of the two parts folded in. A
symmetric :math:`3 \times 3` tensor is an isotropic part (degree 0, 1 number) plus an anisotropic part
(degree 2, 5 numbers); each edge contributes to both:

.. math::

    h_{ij} &= \mathrm{LN}\Big(\sum_{lm} \mathrm{Norm}\big(Y(\vec r_{ij})\big)_{lm}\, [x_j, x_i]_{lm}\Big)
      \in \mathbb{R}^{C'} \\
    s_i &= \mathrm{MLP}_0\big(\langle h_{ij} \rangle_j\big), \qquad
    a_{i,m} = \mathrm{MLP}_2\big(\langle Y^2_m(\hat r_{ij})\, h_{ij} \rangle_j\big) \\
    S &= \big(\sigma_0 \langle s_i \rangle_i + \mu_0\big)\, B_0
      + \sum_{m=-2}^{2} \big(\sigma_2 \langle a_{i,m} \rangle_i + \mu_2\big)\, B_{2,m}

with :math:`Y` the unnormalised (polynomial, ``"integral"``-normalised) spherical harmonics of the edge vector
up to :math:`l_{max}`, :math:`\mathrm{Norm}` the model's equivariant norm on one channel, :math:`[x_j, x_i]`
the source and target features (or the target's alone), :math:`\langle\cdot\rangle_j` a mean over the
edges of a target, :math:`\langle\cdot\rangle_i` a mean (or, ``extensive``, a sum divided by
``avg_num_nodes``) over the atoms of a graph, :math:`(\mu, \sigma)` the normalisers of the two parts and
:math:`B` the Clebsch-Gordan change of basis from :math:`0 \oplus 1 \oplus 2` to Cartesian
:math:`3 \times 3` (fairchem's ``cg_change_mat(2)``). With ``edge_level_mlp`` the MLPs act on each edge
before the mean over edges.

Like fairchem's, the MLP of the anisotropic part applies biases and SiLU to each component :math:`m` and the
anisotropic mean :math:`\mu_2` is added to each component: the output is then exactly :math:`R S R^T` under a
rotation :math:`R` only when those are zero (one bias-free layer, :math:`\mu_2 = 0`); the isotropic part
:math:`\operatorname{tr} S` is invariant in every case.

Example:
    >>> import torch
    >>> from zoo.nn.rank2 import Rank2SymmetricHead
    >>> head = Rank2SymmetricHead(sphere_channels=4, lmax=2).double()
    >>> x = torch.randn(3, 9, 4, dtype=torch.float64)
    >>> edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])
    >>> vec = torch.randn(3, 3, dtype=torch.float64)
    >>> stress = head(x, edge_index, vec, torch.zeros(3, dtype=torch.long), 1)
    >>> stress.shape, torch.allclose(stress, stress.transpose(1, 2))
    (torch.Size([1, 3, 3]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.geometry import spherical_harmonics
from zoo.kernels.segment import segment_counts
from zoo.nn.chunking import chunked_scatter_sum
from zoo.nn.norm import NormType, equivariant_norm

__all__ = ["Rank2SymmetricHead", "rank2_change_of_basis"]


def rank2_change_of_basis(dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``[9, 9]``: row :math:`a` is the flattened :math:`3 \times 3` basis tensor of irrep component :math:`a`.

    Components: :math:`l = 0` (:math:`I/\sqrt 3`), :math:`l = 1` (3 antisymmetric), :math:`l = 2`
    (5 symmetric traceless, in e3nn's order of :math:`Y^2_m`: :math:`xz, xy, 2y^2 - x^2 - z^2, yz,
    z^2 - x^2`). Orthonormal; a tensor is ``irreps @ rank2_change_of_basis()`` flattened row-major.
    """
    a, b, c = 3**-0.5, 2**-0.5, 6**-0.5
    rows = [
        [a, 0, 0, 0, a, 0, 0, 0, a],
        [0, 0, 0, 0, 0, b, 0, -b, 0],
        [0, 0, -b, 0, 0, 0, b, 0, 0],
        [0, b, 0, -b, 0, 0, 0, 0, 0],
        [0, 0, b, 0, 0, 0, b, 0, 0],
        [0, b, 0, b, 0, 0, 0, 0, 0],
        [-c, 0, 0, 0, 2 * c, 0, 0, 0, -c],
        [0, 0, 0, 0, 0, b, 0, b, 0],
        [-b, 0, 0, 0, 0, 0, 0, 0, b],
    ]
    return torch.tensor(rows, dtype=dtype)


def _mlp(width: int, num_layers: int) -> nn.Sequential:
    """``num_layers`` linear layers ``width -> ... -> 1`` with SiLU between them (fairchem's indices)."""
    layers: list[nn.Module] = []
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, width), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def _divide_by_count(total: Tensor, index: Tensor) -> Tensor:
    """Sums ``total [size, ...]`` of values grouped by ``index [E]`` divided by the group sizes (at least 1)."""
    count = segment_counts(index, total.shape[0]).clamp(min=1).to(total.dtype)
    return total / count.reshape(-1, *([1] * (total.dim() - 1)))


def _mean_at(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Mean of ``values [E, ...]`` grouped by ``index [E]`` into ``[size, ...]`` (0 for empty groups)."""
    return _divide_by_count(values.new_zeros(size, *values.shape[1:]).index_add_(0, index, values), index)


class Rank2SymmetricHead(nn.Module):
    r"""Symmetric rank-2 tensor per graph from node features ``[N, K, C]`` (fairchem ``rank2_symmetric_head``).

    Parameter names follow fairchem's (``sphharm_norm``, ``xedge_layer_norm``, ``block.scalar_MLP``,
    ``block.irrep2_MLP``) so its state dicts load unchanged.

    Args:
        sphere_channels: :math:`C` of the node features.
        lmax: their largest degree.
        norm_type: the backbone's norm (applied to the edge spherical harmonics, one channel).
        use_source_target_embedding: edge features from source and target (:math:`C' = 2C`), else the
            target's alone.
        edge_level_mlp: apply the MLPs on edges before the mean over each target's edges.
        num_mlp_layers: linear layers of each MLP.
        extensive: sum over a graph's atoms divided by ``avg_num_nodes`` instead of the mean.
        avg_num_nodes: the divisor of ``extensive`` (fairchem's default 1).
        isotropic_mean, isotropic_std, anisotropic_mean, anisotropic_std: output normalisers (``out * std +
            mean``) of the two parts, in the output's units.

    With ``edge_chunk_size`` set (``None`` by default; the model's ``set_edge_chunk_size``) and more edges than
    that, the edge terms are computed and summed for chunks of whole targets at a time
    (:func:`zoo.nn.chunking.chunked_scatter_sum`), then divided by the degrees: equal to round-off.

    Shapes: ``x [N, K, C]``, ``edge_index [2, E]``, ``vec [E, 3]`` (source minus target), ``batch [N]`` ->
    ``[B, 3, 3]``, symmetric.
    """

    def __init__(
        self,
        sphere_channels: int,
        lmax: int,
        *,
        norm_type: NormType = "layer_norm_sh",
        use_source_target_embedding: bool = False,
        edge_level_mlp: bool = False,
        num_mlp_layers: int = 2,
        extensive: bool = False,
        avg_num_nodes: float = 1.0,
        isotropic_mean: float = 0.0,
        isotropic_std: float = 1.0,
        anisotropic_mean: float = 0.0,
        anisotropic_std: float = 1.0,
    ) -> None:
        super().__init__()
        if num_mlp_layers < 1:
            raise ValueError(f"num_mlp_layers must be >= 1, got {num_mlp_layers}")
        self.lmax, self.use_source_target_embedding = lmax, use_source_target_embedding
        self.edge_level_mlp, self.extensive, self.avg_num_nodes = edge_level_mlp, extensive, avg_num_nodes
        self.edge_chunk_size: int | None = None
        self.isotropic_mean, self.isotropic_std = isotropic_mean, isotropic_std
        self.anisotropic_mean, self.anisotropic_std = anisotropic_mean, anisotropic_std
        width = 2 * sphere_channels if use_source_target_embedding else sphere_channels
        self.sphharm_norm = equivariant_norm(norm_type, lmax, 1)
        self.xedge_layer_norm = nn.LayerNorm(width)
        self.block = nn.ModuleDict(
            {"scalar_MLP": _mlp(width, num_mlp_layers), "irrep2_MLP": _mlp(width, num_mlp_layers)}
        )
        self.register_buffer("change_of_basis", rank2_change_of_basis(torch.get_default_dtype()), persistent=False)

    def edge_terms(self, x: Tensor, edge_index: Tensor, vec: Tensor) -> tuple[Tensor, Tensor]:
        """What is averaged over each target's edges: the edge features ``[E, C']`` and their degree-2 part
        ``[E, 5, C']``, or with ``edge_level_mlp`` the MLPs of them, ``[E, 1]`` and ``[E, 5, 1]``."""
        source, target = edge_index
        vec = vec.detach()
        weights = spherical_harmonics(self.lmax, vec, normalize=False, normalization="integral")  # [E, K]
        weights = self.sphharm_norm(weights[:, :, None])[:, :, 0]
        x_edge = torch.cat([x[source], x[target]], dim=2) if self.use_source_target_embedding else x[target]
        x_edge = self.xedge_layer_norm(torch.einsum("ekc, ek -> ec", x_edge, weights))  # [E, C']
        y2 = spherical_harmonics(2, vec, normalize=True, normalization="integral")[:, 4:]  # [E, 5]
        irrep2 = y2[:, :, None] * x_edge[:, None, :]  # [E, 5, C']
        if self.edge_level_mlp:
            return self.block["scalar_MLP"](x_edge), self.block["irrep2_MLP"](irrep2)
        return x_edge, irrep2

    def forward(self, x: Tensor, edge_index: Tensor, vec: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        target = edge_index[1]
        num_nodes = x.shape[0]
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
            sums = chunked_scatter_sum(
                lambda chunk: self.edge_terms(x, chunk.edge_index, vec[chunk.edges]),
                edge_index,
                num_nodes,
                self.edge_chunk_size,
            )
            node_scalar, node_irrep2 = (_divide_by_count(total, target) for total in sums)
        else:
            node_scalar, node_irrep2 = (
                _mean_at(terms, target, num_nodes) for terms in self.edge_terms(x, edge_index, vec)
            )
        if not self.edge_level_mlp:
            node_scalar = self.block["scalar_MLP"](node_scalar)  # [N, 1]
            node_irrep2 = self.block["irrep2_MLP"](node_irrep2)  # [N, 5, 1]
        if self.extensive:
            scalar = node_scalar.new_zeros(num_graphs, 1).index_add_(0, batch, node_scalar) / self.avg_num_nodes
            aniso = node_irrep2.new_zeros(num_graphs, 5).index_add_(0, batch, node_irrep2[..., 0]) / self.avg_num_nodes
        else:
            scalar = _mean_at(node_scalar, batch, num_graphs)  # [B, 1]
            aniso = _mean_at(node_irrep2[..., 0], batch, num_graphs)  # [B, 5]
        scalar = scalar * self.isotropic_std + self.isotropic_mean
        aniso = aniso * self.anisotropic_std + self.anisotropic_mean
        irreps = torch.cat([scalar, scalar.new_zeros(num_graphs, 3), aniso], dim=1)  # [B, 9]: l = 0, 1, 2
        return (irreps @ self.change_of_basis.to(irreps.dtype)).reshape(num_graphs, 3, 3)
