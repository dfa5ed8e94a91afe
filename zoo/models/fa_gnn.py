r"""FA-GNN: a plain message-passing network made E(3)-equivariant by frame averaging at every layer
(Puny et al., *Frame Averaging for Invariant and Equivariant Network Design*, ICLR 2022, Sec. 5.3, N-body).

The backbone is the non-equivariant GNN baseline of the EGNN paper (``GCL``: edge MLP on
:math:`(h_i, h_j, a_{ij})`, sum over incoming edges, node MLP, residual). It knows nothing of symmetry; the
official FA-GNN (``omri1348/Frame-Averaging``, ``nbody/n_body_system/model_FA.py``) makes each layer
equivariant with frame averaging and passes *equivariant* latent features between layers:

1. Input frames from the particle positions (PCA frames of :func:`zoo.geometry.pca_frames`, all 8 sign
   patterns of group :math:`E(3)`): node inputs are the centred positions and the velocities expressed in each
   frame, :math:`u_i^{(k)} = \big(F_k (x_i - c),\ F_k v_i\big) \in \mathbb R^6`, and the :math:`K = 8` copies
   of every graph run as one batch.
2. :math:`h^{(k)} = \mathrm{embedding}(u^{(k)})`, then layer :math:`\ell` (a ``GCL``) on every copy:

   .. math::

       m_{ij} &= \phi_e\big(h_i, h_j, q_i q_j, \lVert x_i - x_j \rVert^2\big), \qquad
       h_i \leftarrow h_i + \phi_h\Big(h_i, \sum_{j \ne i} m_{ij}\Big).

3. Between layers the :math:`H` features of a node are read as :math:`C = H / 3` vectors of
   :math:`\mathbb R^3` in frame :math:`k`, rotated back and averaged, :math:`\bar h_i = \frac1K \sum_k
   h_i^{(k)} F_k` (``[N, C, 3]``, equivariant), and a new set of frames is computed from the point cloud of
   all :math:`nC` latent vectors of the graph (centred on their mean :math:`\bar c`):
   :math:`h_i^{(k)} \leftarrow (\bar h_i - \bar c)\, F_k'^\top`.
4. After the last layer a decoder MLP gives one vector per node and copy; it is rotated back with the last
   frames, averaged, and the input centroid is added: :math:`\hat x_i = c + \frac1K \sum_k
   \phi_d(h_i^{(k)})\, F_k`, the predicted positions (not a displacement).

Each step is an equivariant function of the previous one, so the whole model is :math:`E(3)`-equivariant
(translations through the centring) for every input with distinct principal variances. A single
:class:`~zoo.models.frame_averaging.FrameAveraged` around the GNN would average only once, over the input
frames; FA-GNN re-frames the latent features at every layer and that is what is implemented here.

Conventions: the official frames are the eigenvectors of :math:`\sum_i (x_i - c)(x_i - c)^\top` in
*ascending* eigenvalue order (``torch.symeig``), times the 8 sign patterns; the frames here are
:func:`~zoo.geometry.pca_frames` with the rows put back in ascending order, so canonical coordinates and latent
channels line up with the official ones and an official state dict (parameter names ``embedding.0``,
``gcl_<l>.edge_mlp``, ``gcl_<l>.node_mlp``, ``decoder``) loads with ``strict=True``. The set of 8 frames (and
so the average) does not depend on the eigenvector signs that the eigensolver returns. As upstream, no gradient
flows through the frames (they are computed from detached points); with the same weights, outputs and parameter
gradients equal the official code's to round-off (float64). Two biases get no gradient, there as here: a
constant vector added in every frame averages to zero over the sign patterns, so the last bias of the decoder
and of the node MLPs of all layers but the last have no effect.

Edges: every ordered pair of particles of a structure (``edge_index[0]`` the source :math:`j`,
``edge_index[1]`` the target :math:`i`; the official code calls the target ``row``).

Registered architecture: ``fa-gnn-nbody`` (60 features, 4 layers, 92,103 parameters, the paper's model).

Example:
    >>> import torch, zoo
    >>> from zoo.graph import AtomsGraph, batch_graphs
    >>> model = zoo.create_model("fa-gnn-nbody").double()
    >>> graph = AtomsGraph.build(torch.randn(5, 3, dtype=torch.float64), vel=torch.randn(5, 3),
    ...                          charges=torch.tensor([[1.0], [-1.0], [1.0], [1.0], [-1.0]], dtype=torch.float64))
    >>> model(batch_graphs([graph, graph]))["pos"].shape
    torch.Size([10, 3])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry.frames import pca_frames
from zoo.graph import node_graph_index, num_graphs
from zoo.kernels import check_fusable, fused_aggregate
from zoo.kernels.segment import segment_counts
from zoo.models.egnn import Activation, activation, check_dtype, graph_edges, require_fields, scatter_sum
from zoo.models.frame_averaging import resolve_group
from zoo.registry import register_model

__all__ = ["FAGNN", "GCL", "ascending_pca_frames", "from_frames", "to_frames"]

IN_NODE_NF = 6  # framed position and velocity
IN_EDGE_NF = 2  # q_i q_j and the squared distance


# ------------------------------------------------------------------------------------------------------ frames
def ascending_pca_frames(points: Tensor, batch: Tensor, num_graphs: int, group: str) -> tuple[Tensor, Tensor]:
    r"""PCA frames of each graph's point cloud with the axes in ascending order of variance (the official
    ``torch.symeig`` order), and the centroids.

    As in the official code, no gradient flows through the frames (they are computed from detached points;
    the eigenvector derivatives diverge where two variances meet); the centroids keep their gradient.

    Args:
        points: ``[P, 3]`` points (positions, or latent vectors).
        batch: ``[P]`` graph index of each point.
        num_graphs: :math:`B`.
        group: ``"E3"`` (8 frames) or ``"SE3"`` (4).

    Returns:
        ``(frames [B, K, 3, 3], centroid [B, 3])``, rows of each frame = signed axes, smallest variance first.
    """
    frames, _ = pca_frames(points.detach(), batch, group=group, num_graphs=num_graphs)
    count = segment_counts(batch, num_graphs).to(points.dtype)
    centroid = points.new_zeros(num_graphs, 3).index_add(0, batch, points) / count[:, None]
    return frames.flip(-2), centroid


def to_frames(vectors: Tensor, node_frames: Tensor) -> Tensor:
    r"""Express per-node vectors in every frame: :math:`v F_k^\top`.

    Shapes:
        ``vectors [N, C, 3]``, ``node_frames [N, K, 3, 3]`` -> ``[K, N, C, 3]``.
    """
    return torch.einsum("nkij,ncj->knci", node_frames, vectors)


def from_frames(vectors: Tensor, node_frames: Tensor) -> Tensor:
    r"""Rotate per-copy vectors back and average over the frames: :math:`\frac1K \sum_k v^{(k)} F_k`.

    Shapes:
        ``vectors [K, N, C, 3]``, ``node_frames [N, K, 3, 3]`` -> ``[N, C, 3]``.
    """
    return torch.einsum("knci,nkij->ncj", vectors, node_frames) / node_frames.shape[1]


# ------------------------------------------------------------------------------------------------------- layer
class GCL(nn.Module):
    r"""Graph convolutional layer of the EGNN paper's GNN baseline (official ``models/gcl.py:GCL``).

    .. math::

        m_{ij} = \phi_e(h_i, h_j, a_{ij}), \qquad
        h_i \leftarrow [h_i +]\ \phi_h\Big(h_i, \sum_{j} m_{ij}\Big)

    with two-layer MLPs :math:`\phi_e` (activation after both layers) and :math:`\phi_h` (activation between).

    Args:
        hidden_nf: width of :math:`h`, :math:`m` and the MLPs.
        edges_in_nf: width of the edge attributes :math:`a_{ij}`.
        act_fn: activation.
        residual: add the input (official ``recurrent=True``).

    Shapes:
        ``h [N, hidden_nf]``, ``edge_index [2, E]``, ``edge_attr [E, edges_in_nf]`` -> ``[N, hidden_nf]``.
    """

    def __init__(self, hidden_nf: int, edges_in_nf: int, act_fn: Activation = "silu", residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.backend: str | None = None  # zoo.kernels backend of the message step (FAGNN.set_backend)
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edges_in_nf, hidden_nf),
            activation(act_fn),
            nn.Linear(hidden_nf, hidden_nf),
            activation(act_fn),
        )
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf, hidden_nf), activation(act_fn), nn.Linear(hidden_nf, hidden_nf)
        )

    def message_and_aggregate(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        r""":math:`\sum_j m_{ij}` at each target :math:`i`, ``[N, hidden_nf]``.

        The first linear map of :math:`\phi_e` acts on the concatenation :math:`(h_i, h_j, a_{ij})`; it is
        applied as :math:`W_1 h_i + W_2 h_j + W_3 a_{ij} + b` with the node terms computed once per node instead
        of once per edge (the same numbers up to round-off). With ``backend`` set, the whole step is
        :func:`zoo.kernels.fused_aggregate`.
        """
        if self.backend is not None:
            return fused_aggregate(h, edge_index, edge_attr, self.edge_mlp, backend=self.backend)
        source, target = edge_index
        first, rest = self.edge_mlp[0], self.edge_mlp[1:]
        hidden = h.shape[1]
        w_target, w_source, w_edge = first.weight.split([hidden, hidden, first.in_features - 2 * hidden], dim=1)
        pre = torch.addmm(first.bias, edge_attr, w_edge.T) + (h @ w_target.T)[target] + (h @ w_source.T)[source]
        return scatter_sum(rest(pre), target, h.shape[0])

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        out = self.node_mlp(torch.cat([h, self.message_and_aggregate(h, edge_index, edge_attr)], dim=1))
        return h + out if self.residual else out


# ------------------------------------------------------------------------------------------------------- model
class FAGNN(nn.Module):
    r"""FA-GNN for charged N-body dynamics (official ``FA_GNN``): frame-averaged :class:`GCL` layers with
    latent frames between layers (module docstring).

    Reads ``pos [N, 3]``, ``vel [N, 3]`` and ``charges [N, 1]``; returns ``{"pos": [N, 3]}``, the predicted
    positions. Structures of any size can be batched (the official code assumes 5 particles).

    Args:
        hidden_nf: width of the features; a multiple of 3 (the latent features are ``hidden_nf / 3`` vectors).
        n_layers: number of :class:`GCL` layers.
        act_fn: activation of all MLPs.
        residual: residual node updates (official ``recurrent=True``).
        group: ``"E3"`` (8 frames, the paper) or ``"SE3"`` (4 proper frames: not reflection-equivariant).
    """

    reads = ("pos", "vel", "charges")

    def __init__(
        self,
        hidden_nf: int = 60,
        n_layers: int = 4,
        *,
        act_fn: Activation = "silu",
        residual: bool = True,
        group: str = "E3",
    ) -> None:
        super().__init__()
        if hidden_nf < 3 or hidden_nf % 3:
            raise ValueError(f"hidden_nf must be a positive multiple of 3 (latent 3D vectors), got {hidden_nf}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.group = resolve_group(group)
        if self.group not in ("E3", "SE3"):
            raise ValueError(f"FA-GNN frames 3D point clouds: group must be 'E3' or 'SE3', got {group!r}")
        self.hidden_nf = hidden_nf
        self.n_layers = n_layers
        self.embedding = nn.Sequential(nn.Linear(IN_NODE_NF, hidden_nf))
        for index in range(n_layers):
            self.add_module(f"gcl_{index}", GCL(hidden_nf, IN_EDGE_NF, act_fn=act_fn, residual=residual))
        self.decoder = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), activation(act_fn), nn.Linear(hidden_nf, 3))
        self.metadata: dict[str, Any] = {
            "task": "dynamics",
            "features": "charged",
            "edges": "complete",
            "outputs": {"pos": "position"},
            "frame_averaging": {"frames": "all", "group": self.group, "latent_frames": True},
        }

    def layers(self) -> list[GCL]:
        """The layers ``gcl_0 ... gcl_{n_layers-1}`` in order."""
        return [getattr(self, f"gcl_{index}") for index in range(self.n_layers)]

    def set_backend(self, backend: str | None) -> None:
        """Run every layer's message step through :mod:`zoo.kernels` with ``backend``, or the layers' own
        PyTorch code (``None``, default); a runtime setting, results equal to round-off.

        Raises:
            KernelError: an unknown backend or an activation the kernels lack.
        """
        for index, layer in enumerate(self.layers()):
            edge_dim = layer.edge_mlp[0].in_features - 2 * self.hidden_nf
            check_fusable(backend, layer.edge_mlp, self.hidden_nf, edge_dim, f"FAGNN layer gcl_{index}")
        for layer in self.layers():
            layer.backend = backend

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{"pos": [N, 3]}``: positions after the model's time horizon."""
        require_fields(graph, type(self).__name__, self.reads)
        check_dtype(graph, self)
        pos, batch, batch_size = graph.pos, node_graph_index(graph), num_graphs(graph)
        num_nodes, channels = pos.shape[0], self.hidden_nf // 3

        edge_index, _ = graph_edges(graph, "complete")  # [2, E]
        source, target = edge_index
        charge = graph.charges[:, 0].to(pos.dtype)
        radial = (pos[target] - pos[source]).square().sum(dim=1, keepdim=True)  # [E, 1]
        edge_attr = torch.cat([(charge[target] * charge[source])[:, None], radial], dim=1)  # [E, 2]

        frames, centroid = ascending_pca_frames(pos, batch, batch_size, self.group)  # [B, K, 3, 3], [B, 3]
        num_frames = frames.shape[1]
        offset = num_nodes * torch.arange(num_frames, device=pos.device)
        edge_index = (edge_index[None] + offset[:, None, None]).transpose(0, 1).reshape(2, -1)  # [2, K E], copy-major
        edge_attr = edge_attr.repeat(num_frames, 1)  # [K E, 2]

        inputs = torch.stack([pos - centroid[batch], graph.vel.to(pos.dtype)], dim=1)  # [N, 2, 3]
        node_frames = frames[batch]  # [N, K, 3, 3]
        h = self.embedding(to_frames(inputs, node_frames).reshape(num_frames * num_nodes, IN_NODE_NF))  # [K N, H]
        latent_batch = batch.repeat_interleave(channels)  # graph of each latent vector, [N C]
        for index, layer in enumerate(self.layers()):
            h = layer(h, edge_index, edge_attr)
            if index < self.n_layers - 1:
                latent = from_frames(h.view(num_frames, num_nodes, channels, 3), node_frames)  # [N, C, 3]
                frames, latent_centre = ascending_pca_frames(
                    latent.reshape(-1, 3), latent_batch, batch_size, self.group
                )
                node_frames = frames[batch]
                centred = latent - latent_centre[batch][:, None, :]
                h = to_frames(centred, node_frames).reshape(num_frames * num_nodes, self.hidden_nf)
        out = self.decoder(h).view(num_frames, num_nodes, 1, 3)
        return {"pos": from_frames(out, node_frames)[:, 0] + centroid[batch]}


# ---------------------------------------------------------------------------------------------------- variants
_VARIANTS: dict[str, dict[str, Any]] = {"fa-gnn-nbody": {"hidden_nf": 60, "n_layers": 4}}
_VARIANT_METADATA: dict[str, dict[str, Any]] = {"fa-gnn-nbody": {"units": {"pos": "simulation units"}}}


def _create_fa_gnn(variant: str, **kwargs: Any) -> FAGNN:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    model = FAGNN(**{**_VARIANTS[variant], **kwargs})
    model.metadata.update(_VARIANT_METADATA[variant])
    return model


@register_model("fa-gnn-nbody", task="dynamics")
def fa_gnn_nbody(**kwargs: Any) -> FAGNN:
    """FA-GNN for the charged N-body system (Puny et al. 2022): 4 frame-averaged layers, 60 features, 92,103
    parameters."""
    return _create_fa_gnn("fa-gnn-nbody", **kwargs)
