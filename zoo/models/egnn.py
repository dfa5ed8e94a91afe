r"""EGNN: E(n)-equivariant graph neural networks (Satorras, Hoogeboom and Welling, ICML 2021).

One layer (E_GCL) updates invariant node features :math:`h_i` and coordinates :math:`x_i \in \mathbb{R}^n`
(any dimension :math:`n`) from messages along the edges :math:`j \to i` (paper, eqs. 3-6):

.. math::

    m_{ij} &= \phi_e\left(h_i, h_j, \lVert x_i - x_j \rVert^2, a_{ij}\right) \\
    x_i &\leftarrow x_i + C \sum_{j} (x_i - x_j)\, \phi_x(m_{ij}) \\
    m_i &= \sum_{j} m_{ij} \\
    h_i &\leftarrow h_i + \phi_h(h_i, m_i)

and the velocity variant (eq. 7) adds :math:`\phi_v(h_i)\, v_i` to the coordinate update. The arithmetic follows
the official code (``vgsatorras/egnn``, ``models/gcl.py``, ``n_body_system/model.py``, ``qm9/models.py``)
term for term, with its parameter names, so its state dicts load here with ``strict=True``:

* the coordinate sum is a *mean* over the incoming edges (:math:`C = 1/\deg(i)`, times ``coords_weight``),
  each term clamped to :math:`\pm 100` first;
* ``norm_diff`` divides :math:`x_i - x_j` by :math:`\lVert x_i - x_j \rVert + 1`; ``tanh`` appends a
  :math:`\tanh` to :math:`\phi_x` (the official code also creates a ``coords_range`` of 3 but never applies it);
* ``attention`` gates each message with :math:`\sigma(\mathrm{Linear}(m_{ij}))`;
* the last layer of :math:`\phi_x` has no bias and is initialised with ``xavier_uniform_(gain=0.001)``.

Edge convention: ``edge_index[0]`` is the source :math:`j`, ``edge_index[1]`` the target :math:`i` (the official
code names the target ``row``). Graph models build the complete graph of each structure (``edges="complete"``,
the official N-body and QM9 set-ups) or take the graph's own neighbour list (``edges="graph"``, periodic images
included through :func:`zoo.graph.edge_vectors`).

Registered architectures: ``egnn`` (generic), ``egnn-nbody``, ``egnn-qm9``, ``egnn-potential``.

Example:
    >>> import torch, zoo
    >>> from zoo.graph import AtomsGraph, batch_graphs
    >>> model = zoo.create_model("egnn-nbody").double()
    >>> graph = AtomsGraph.build(torch.randn(5, 3, dtype=torch.float64), vel=torch.randn(5, 3),
    ...                          charges=torch.tensor([[1.0], [-1.0], [1.0], [1.0], [-1.0]], dtype=torch.float64))
    >>> model(batch_graphs([graph, graph]))["pos"].shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry import PolynomialEnvelope
from zoo.graph import GraphError, edge_vectors, node_graph_index, num_graphs
from zoo.kernels import KernelError, check_fusable, fused_aggregate
from zoo.nn.chunking import EdgeChunk, check_max_edges, chunked_scatter_sum
from zoo.nn.conservative import conservative_outputs
from zoo.registry import register_model

__all__ = [
    "EGCL",
    "EGNN",
    "EGNNDynamics",
    "EGNNPotential",
    "EGNNProperty",
    "complete_edge_index",
    "dynamics_features",
    "graph_edges",
]

Activation = Literal["silu", "relu", "leaky_relu"]
EdgeMode = Literal["complete", "graph"]
DynamicsFeatures = Literal["charged", "gravity", "molecule"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}
COORD_CLAMP = 100.0
QM9_UNITS = {
    "mu": "D",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "bohr^2",
    "zpve": "meV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "Cv": "cal/(mol K)",
}
# (node features, edge features) of each input set-up of the dynamics models.
DYNAMICS_FEATURE_SIZES: dict[str, tuple[int, int]] = {"charged": (1, 2), "gravity": (1, 1), "molecule": (2, 5)}


def activation(name: str) -> nn.Module:
    """The activation module called ``name``: ``silu``, ``relu`` or ``leaky_relu`` (slope 0.2, as upstream)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a ``ValueError`` naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def scatter_sum(values: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """:math:`\\sum` of ``values [E, F]`` over edges with the same ``index [E]``; ``[num_nodes, F]``."""
    return values.new_zeros(num_nodes, values.shape[1]).index_add_(0, index, values)


def scatter_mean(values: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Mean of ``values [E, F]`` per ``index [E]``; nodes without edges get zeros. ``[num_nodes, F]``."""
    count = torch.bincount(index, minlength=num_nodes).clamp(min=1).to(values.dtype)
    return scatter_sum(values, index, num_nodes) / count[:, None]


# ------------------------------------------------------------------------------------------------------ layer
class EGCL(nn.Module):
    r"""E(n)-equivariant graph convolutional layer (official ``E_GCL``, ``E_GCL_vel`` and ``E_GCL_mask``).

    .. math::

        m_{ij} = \phi_e(h_i, h_j, \lVert x_i - x_j\rVert^2, a_{ij}) \cdot w_{ij}, \qquad
        x_i \leftarrow x_i + \frac{c}{\deg i} \sum_j \mathrm{clamp}\big((x_i - x_j)\,\phi_x(m_{ij})\big)
        \;[+\, \phi_v(h_i)\, v_i], \qquad
        h_i \leftarrow [h_i +]\; \phi_h\big(h_i, \textstyle\sum_j m_{ij}, \eta_i\big)

    with :math:`w_{ij}` optional edge weights (a mask, or a cutoff envelope) and :math:`\eta_i` optional node
    attributes. The coordinates may live in any dimension :math:`n`.

    Args:
        input_nf, output_nf, hidden_nf: widths of :math:`h` in, out, and of the MLPs.
        edges_in_d: width of the edge attributes :math:`a_{ij}`.
        nodes_att_dim: width of the node attributes :math:`\eta_i` given to :math:`\phi_h`.
        act_fn: ``"relu"`` (official default), ``"silu"`` or ``"leaky_relu"``.
        residual: add :math:`h_i` to the output of :math:`\phi_h` (official ``recurrent``).
        attention: gate :math:`m_{ij}` by :math:`\sigma(\mathrm{Linear}(m_{ij}))` (``att_mlp``).
        coords_weight: :math:`c`.
        coords_agg: ``"mean"`` (official ``gcl.py``) or ``"sum"`` of the coordinate terms.
        norm_diff: use :math:`(x_i - x_j) / (\lVert x_i - x_j\rVert + 1)` in the coordinate update.
        tanh: append :math:`\tanh` to :math:`\phi_x`.
        update_coords: build :math:`\phi_x` (``coord_mlp``) and update :math:`x`; ``False`` is the official QM9
            layer, which has no ``coord_mlp``.
        velocity: build :math:`\phi_v` (``coord_mlp_vel``) and add :math:`\phi_v(h_i) v_i` (``E_GCL_vel``).
        coord_bias: give the last layer of :math:`\phi_x` a bias (``False`` upstream except SEGNO's N-body).

    Shapes:
        ``h [N, input_nf]``, ``edge_index [2, E]`` (source, target), ``coord [N, n]``, ``vel [N, n]``,
        ``edge_attr [E, edges_in_d]``, ``node_attr [N, nodes_att_dim]``, ``edge_weight [E]``,
        ``edge_offset [E, n]`` -> ``(h [N, output_nf], coord [N, n])``.

    Memory: with ``edge_chunk_size`` set (an attribute, ``None`` by default; :meth:`EGNN.set_edge_chunk_size`
    sets it on every layer) and more edges than that, the edge terms run chunk by chunk
    (:meth:`chunked_aggregate`), equal to round-off.

    Example:
        >>> import torch
        >>> layer = EGCL(8, 8, 16)
        >>> edge_index = torch.tensor([[1, 2, 0, 2], [0, 0, 1, 1]])
        >>> h, x = layer(torch.randn(3, 8), edge_index, torch.randn(3, 5))  # coordinates in 5 dimensions
        >>> h.shape, x.shape
        (torch.Size([3, 8]), torch.Size([3, 5]))
    """

    def __init__(
        self,
        input_nf: int,
        output_nf: int,
        hidden_nf: int,
        edges_in_d: int = 0,
        nodes_att_dim: int = 0,
        *,
        act_fn: Activation = "relu",
        residual: bool = True,
        attention: bool = False,
        coords_weight: float = 1.0,
        coords_agg: Literal["mean", "sum"] = "mean",
        norm_diff: bool = False,
        tanh: bool = False,
        update_coords: bool = True,
        velocity: bool = False,
        coord_bias: bool = False,
    ) -> None:
        super().__init__()
        check_choice("coords_agg", coords_agg, ("mean", "sum"))
        if velocity and not update_coords:
            raise ValueError("velocity=True needs update_coords=True (the velocity term moves the coordinates)")
        if residual and input_nf != output_nf:
            raise ValueError(f"residual=True needs input_nf == output_nf, got {input_nf} and {output_nf}")
        self.residual = residual
        self.attention = attention
        self.coords_weight = coords_weight
        self.coords_agg = coords_agg
        self.norm_diff = norm_diff
        self.update_coords = update_coords
        self.velocity = velocity
        self.edge_chunk_size: int | None = None
        self.backend: str | None = None  # zoo.kernels backend of the fused message step (EGNN.set_backend)
        act = activation(act_fn)
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * input_nf + 1 + edges_in_d, hidden_nf), act, nn.Linear(hidden_nf, hidden_nf), act
        )
        self.node_mlp = nn.Sequential(
            nn.Linear(hidden_nf + input_nf + nodes_att_dim, hidden_nf), act, nn.Linear(hidden_nf, output_nf)
        )
        if update_coords:
            last = nn.Linear(hidden_nf, 1, bias=coord_bias)
            nn.init.xavier_uniform_(last.weight, gain=0.001)
            coord_layers = [nn.Linear(hidden_nf, hidden_nf), act, last]
            if tanh:
                coord_layers.append(nn.Tanh())
            self.coord_mlp = nn.Sequential(*coord_layers)
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(hidden_nf, 1), nn.Sigmoid())
        if velocity:
            self.coord_mlp_vel = nn.Sequential(nn.Linear(input_nf, hidden_nf), act, nn.Linear(hidden_nf, 1))

    def edge_geometry(
        self, coord: Tensor, edge_index: Tensor, edge_offset: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Squared lengths :math:`\lVert x_i - x_j \rVert^2` ``[E, 1]`` and differences :math:`x_i - x_j` ``[E, n]``
        (divided by :math:`\lVert x_i - x_j \rVert + 1` with ``norm_diff``).

        ``edge_offset [E, n]`` is the periodic offset :math:`S_{ij} \cdot C` of each edge, so that
        :math:`x_i - x_j` is minus the edge vector of :func:`zoo.graph.edge_vectors`.
        """
        source, target = edge_index
        coord_diff = coord[target] - coord[source]  # [E, n]
        if edge_offset is not None:
            coord_diff = coord_diff - edge_offset
        radial = torch.sum(coord_diff**2, dim=1, keepdim=True)  # [E, 1]
        if self.norm_diff:
            coord_diff = coord_diff / (torch.sqrt(radial) + 1.0)
        return radial, coord_diff

    def message(
        self,
        h: Tensor,
        edge_index: Tensor,
        radial: Tensor,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        r""":math:`m_{ij}` ``[E, hidden_nf]``: gather :math:`h_i, h_j` -> edge MLP :math:`\phi_e` (-> attention
        gate, edge weight)."""
        source, target = edge_index
        parts = [h[target], h[source], radial] + ([edge_attr] if edge_attr is not None else [])
        message = self.edge_mlp(torch.cat(parts, dim=1))  # [E, hidden]
        if self.attention:
            message = message * self.att_mlp(message)
        if edge_weight is not None:
            message = message * edge_weight[:, None]
        return message

    def message_and_aggregate(
        self,
        h: Tensor,
        edge_index: Tensor,
        radial: Tensor,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The message step: :meth:`message`, then the sum at the target.

        This is the one place a fused message-passing kernel replaces.

        Returns:
            ``(m_ij [E, hidden_nf], m_i [N, hidden_nf])``.
        """
        message = self.message(h, edge_index, radial, edge_attr, edge_weight)
        return message, scatter_sum(message, edge_index[1], h.shape[0])

    def fused_message_sum(
        self,
        h: Tensor,
        edge_index: Tensor,
        radial: Tensor,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        r""":math:`\sum_j m_{ij}` ``[N, hidden_nf]`` by :func:`zoo.kernels.fused_aggregate` with ``self.backend``:
        the edge MLP, attention gate and edge weight of :meth:`message` in one op that keeps no ``[E, hidden]``
        tensor (layers without coordinate updates: their messages are only summed)."""
        edge_features = radial if edge_attr is None else torch.cat([radial, edge_attr], dim=1)
        gate = self.att_mlp if self.attention else None
        return fused_aggregate(
            h, edge_index, edge_features, self.edge_mlp, backend=self.backend, gate=gate, edge_weight=edge_weight
        )

    def coord_edge_term(self, coord_diff: Tensor, message: Tensor) -> Tensor:
        r""":math:`\mathrm{clamp}_{\pm 100}\big((x_i - x_j)\,\phi_x(m_{ij})\big)` ``[E, n]``."""
        return torch.clamp(coord_diff * self.coord_mlp(message), min=-COORD_CLAMP, max=COORD_CLAMP)

    def coord_term(self, coord_diff: Tensor, message: Tensor, target: Tensor, num_nodes: int) -> Tensor:
        r""":math:`\frac{c}{\deg i} \sum_j \mathrm{clamp}_{\pm 100}\big((x_i - x_j)\,\phi_x(m_{ij})\big)` ``[N, n]``
        (a plain sum with ``coords_agg="sum"``)."""
        trans = self.coord_edge_term(coord_diff, message)  # [E, n]
        reduce = scatter_mean if self.coords_agg == "mean" else scatter_sum
        return reduce(trans, target, num_nodes) * self.coords_weight

    def chunked_aggregate(
        self,
        h: Tensor,
        edge_index: Tensor,
        coord: Tensor,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
        edge_offset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        r"""The edge terms of a layer computed for chunks of at most ``edge_chunk_size`` edges at a time
        (:func:`zoo.nn.chunking.chunked_scatter_sum`; with gradients each chunk is recomputed in the backward
        pass): edge geometry, :math:`m_{ij}` and the coordinate terms of one chunk exist at a time.

        Returns:
            ``(m_i [N, hidden_nf], coordinate update [N, n] or None without update_coords)``, equal to round-off
            to :meth:`message_and_aggregate` and :meth:`coord_term` on all edges.
        """
        if self.edge_chunk_size is None:
            raise ValueError("chunked_aggregate needs edge_chunk_size (EGNN.set_edge_chunk_size)")

        def edge_terms(chunk: EdgeChunk) -> Tensor | tuple[Tensor, Tensor]:
            def pick(values: Tensor | None) -> Tensor | None:
                return None if values is None else values[chunk.edges]

            radial, coord_diff = self.edge_geometry(coord, chunk.edge_index, pick(edge_offset))
            message = self.message(h, chunk.edge_index, radial, pick(edge_attr), pick(edge_weight))
            return (message, self.coord_edge_term(coord_diff, message)) if self.update_coords else message

        num_nodes = h.shape[0]
        sums = chunked_scatter_sum(edge_terms, edge_index, num_nodes, self.edge_chunk_size)
        if not self.update_coords:
            return sums, None
        aggregated, coord_sum = sums
        if self.coords_agg == "mean":
            count = torch.bincount(edge_index[1], minlength=num_nodes).clamp(min=1).to(coord_sum.dtype)
            coord_sum = coord_sum / count[:, None]
        return aggregated, coord_sum * self.coords_weight

    def node_update(self, h: Tensor, aggregated: Tensor, node_attr: Tensor | None = None) -> Tensor:
        r""":math:`h_i \leftarrow [h_i +]\; \phi_h(h_i, m_i, \eta_i)`; ``[N, output_nf]``."""
        parts = [h, aggregated] + ([node_attr] if node_attr is not None else [])
        out = self.node_mlp(torch.cat(parts, dim=1))
        return h + out if self.residual else out

    def forward(
        self,
        h: Tensor,
        edge_index: Tensor,
        coord: Tensor,
        *,
        vel: Tensor | None = None,
        edge_attr: Tensor | None = None,
        node_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
        edge_offset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One layer: messages, then coordinates (from the old :math:`h`), then node features."""
        if self.velocity != (vel is not None):
            raise ValueError(
                "this layer has a velocity term: pass vel"
                if self.velocity
                else "vel given to a layer built with velocity=False"
            )
        if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
            aggregated, coord_update = self.chunked_aggregate(h, edge_index, coord, edge_attr, edge_weight, edge_offset)
        elif self.backend is not None and not self.update_coords:
            radial, _ = self.edge_geometry(coord, edge_index, edge_offset)
            aggregated, coord_update = self.fused_message_sum(h, edge_index, radial, edge_attr, edge_weight), None
        else:
            radial, coord_diff = self.edge_geometry(coord, edge_index, edge_offset)
            message, aggregated = self.message_and_aggregate(h, edge_index, radial, edge_attr, edge_weight)
            coord_update = (
                self.coord_term(coord_diff, message, edge_index[1], coord.shape[0]) if self.update_coords else None
            )
        if coord_update is not None:
            coord = coord + coord_update
            if vel is not None:
                coord = coord + self.coord_mlp_vel(h) * vel
        return self.node_update(h, aggregated, node_attr), coord


# -------------------------------------------------------------------------------------- graph -> tensors
_FIELD_HINTS = {
    "x": "node features [N, F]",
    "charges": "particle charges [N, 1] (as zoo.datasets.NBodyDataset yields them)",
    "vel": "velocities [N, 3]",
    "z": "atomic numbers [N]",
    "edge_index": "edges: build them with zoo.graph.radius_graph(graph, cutoff)",
    "edge_shift": "edges: build them with zoo.graph.radius_graph(graph, cutoff)",
    "edge_attr": "edge attributes [E, in_edge_nf]",
}


def require_fields(graph: Data, model: str, fields: Sequence[str]) -> None:
    """Raise a :class:`~zoo.graph.GraphError` naming the first field of ``fields`` the graph lacks."""
    for field in fields:
        if getattr(graph, field, None) is None:
            hint = _FIELD_HINTS.get(field)
            raise GraphError(
                f"{model} reads graph.{field}, which this graph does not have" + (f" ({hint})" if hint else "")
            )


def complete_edge_index(batch: Tensor) -> Tensor:
    """Every ordered pair :math:`j \\to i`, :math:`i \\ne j`, of nodes in the same graph.

    Edges are sorted by target, then source (the order of the official code's fully connected graphs).

    Args:
        batch: ``[N]`` graph index of each node (zeros for one graph).

    Returns:
        ``edge_index [2, E]`` long, row 0 = source, row 1 = target, :math:`E = \\sum_g n_g (n_g - 1)`.

    Example:
        >>> complete_edge_index(torch.tensor([0, 0, 0, 1, 1])).tolist()
        [[1, 2, 0, 2, 0, 1, 4, 3], [0, 0, 1, 1, 2, 2, 3, 4]]
    """
    order = torch.argsort(batch, stable=True)  # nodes grouped by graph
    counts = torch.bincount(batch)
    first = torch.cumsum(counts, 0) - counts
    pairs = counts * counts
    graph_of_pair = torch.repeat_interleave(torch.arange(counts.numel(), device=batch.device), pairs)
    local = torch.arange(int(pairs.sum()), device=batch.device) - (torch.cumsum(pairs, 0) - pairs)[graph_of_pair]
    size = counts[graph_of_pair]
    target, source = local // size, local % size
    keep = target != source
    start = first[graph_of_pair]
    return torch.stack([order[(source + start)[keep]], order[(target + start)[keep]]])


def graph_edges(graph: Data, edges: EdgeMode) -> tuple[Tensor, Tensor | None]:
    r"""The edges a model uses and their periodic offsets.

    * ``"complete"``: :func:`complete_edge_index` of each structure, no offsets (non-periodic graphs only).
    * ``"graph"``: the graph's ``edge_index``; the offset :math:`S_{ij} \cdot C` of each edge is what
      :func:`zoo.graph.edge_vectors` adds to :math:`x_j - x_i` (exactly zero without periodicity).

    Returns:
        ``(edge_index [2, E], edge_offset [E, 3] or None)``.
    """
    if edges == "complete":
        if getattr(graph, "pbc", None) is not None and bool(graph.pbc.any()):
            raise GraphError(
                "edges='complete' builds all pairs of one structure and ignores periodic images; give a "
                "non-periodic graph, or build the model with edges='graph' and a radius_graph"
            )
        return complete_edge_index(node_graph_index(graph)), None
    if getattr(graph, "edge_index", None) is None or getattr(graph, "edge_shift", None) is None:
        raise GraphError(
            "this model uses the graph's neighbour list (edges='graph') but the graph has no edge_index/"
            "edge_shift: build them with zoo.graph.radius_graph(graph, cutoff)"
        )
    source, target = graph.edge_index
    vec, _ = edge_vectors(graph)
    return graph.edge_index, vec - (graph.pos[source] - graph.pos[target])


def check_dtype(graph: Data, module: nn.Module) -> None:
    """Raise a :class:`~zoo.graph.GraphError` when ``graph.pos`` and the module's parameters differ in dtype."""
    dtype = next(module.parameters()).dtype
    if graph.pos.dtype != dtype:
        raise GraphError(
            f"graph.pos is {graph.pos.dtype} but the model is {dtype}: cast one of them "
            f"(model.to({graph.pos.dtype}) or graph.pos.to({dtype}))"
        )


def dynamics_features(
    graph: Data, features: DynamicsFeatures, edge_index: Tensor, radial: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Invariant inputs of the dynamics models, as the official training scripts build them.

    * ``"charged"`` (charged N-body): :math:`h_i = \lVert v_i \rVert`, :math:`a_{ij} = (q_i q_j,
      \lVert x_i - x_j \rVert^2)` with the particle charges :math:`q` in ``graph.charges[:, 0]``.
    * ``"gravity"`` (SEGNO's gravity N-body): :math:`h_i = \lVert v_i \rVert`,
      :math:`a_{ij} = \lVert x_i - x_j \rVert^2`.
    * ``"molecule"`` (SEGNO's MD22): :math:`h_i = (\lVert v_i \rVert, z_i / \max_{k \in g(i)} z_k)`,
      :math:`a_{ij} = (z_i, z_j, 1, 0, \lVert x_i - x_j \rVert^2)` (the official bond type 1 and the unused
      stick indicator 0).

    Args:
        graph: reads ``vel`` and ``charges`` (charged) or ``z`` (molecule).
        features: one of the three set-ups.
        edge_index: ``[2, E]`` edges (source, target).
        radial: ``[E, 1]`` squared edge lengths at the input positions.

    Returns:
        ``(h0 [N, F_node], edge_attr [E, F_edge])`` with the sizes of ``DYNAMICS_FEATURE_SIZES``.
    """
    speed = torch.sqrt(torch.sum(graph.vel**2, dim=1, keepdim=True))  # [N, 1]
    source, target = edge_index
    if features == "charged":
        charge = graph.charges[:, 0]
        return speed, torch.cat([(charge[target] * charge[source])[:, None], radial], dim=1)
    if features == "gravity":
        return speed, radial
    z = graph.z.to(speed.dtype)
    batch = node_graph_index(graph)
    z_max = z.new_zeros(num_graphs(graph)).scatter_reduce(0, batch, z, reduce="amax", include_self=False)
    ones = torch.ones_like(radial)
    edge_attr = torch.cat([z[target, None], z[source, None], ones, torch.zeros_like(radial), radial], dim=1)
    return torch.cat([speed, (z / z_max[batch])[:, None]], dim=1), edge_attr


@functools.cache
def _species_lookup(species: tuple[int, ...], device: torch.device) -> Tensor:
    """``lookup[z]`` = position of ``z`` in ``species``, -1 elsewhere; copied to ``device`` once (a copy from host
    memory in every forward pass would wait for the device's queue)."""
    lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
    lookup[list(species)] = torch.arange(len(species))
    return lookup.to(device)


def _species_index(z: Tensor, species: Sequence[int], model: str) -> Tensor:
    """Position of each atomic number in ``species``; unknown elements raise a :class:`GraphError`."""
    lookup = _species_lookup(tuple(int(s) for s in species), z.device)
    inside = (z >= 0) & (z < len(lookup))
    index = torch.where(inside, lookup[z.clamp(0, len(lookup) - 1)], -1)
    if bool((index < 0).any()):
        unknown = sorted(set(z[index < 0].tolist()))
        raise GraphError(f"{model} knows the elements {list(species)}; the graph has atomic numbers {unknown}")
    return index


# ---------------------------------------------------------------------------------------------------- models
class EGNN(nn.Module):
    r"""The EGNN network: a linear embedding of the node features followed by ``n_layers`` :class:`EGCL` layers
    (official names ``embedding``, ``gcl_0``, ``gcl_1``, ...).

    ``forward(graph)`` reads ``graph.x [N, in_node_nf]`` (plus ``vel`` with ``velocity=True`` and ``edge_attr``
    with ``in_edge_nf > 0``) and returns ``{"pos": [N, 3], "node_features": [N, hidden_nf]}``;
    :meth:`encode` runs on plain tensors with coordinates in any dimension.

    Args:
        in_node_nf: width of the input node features.
        hidden_nf: width of :math:`h` and of the MLPs.
        n_layers: number of layers.
        in_edge_nf: width of the edge attributes.
        act_fn: activation of all MLPs.
        attention, residual, coords_weight, coords_agg, norm_diff, tanh, update_coords, velocity: as in
            :class:`EGCL`, the same for every layer.
        node_attr: give the input node features to every :math:`\phi_h` (official QM9 ``node_attr``).
        edges: ``"complete"`` (all pairs of each structure) or ``"graph"`` (the graph's neighbour list).
    """

    reads: tuple[str, ...] = ("pos", "x")
    weighted_edges = False  # the layers' messages are multiplied by per-edge weights (EGNNPotential's envelope)

    def __init__(
        self,
        in_node_nf: int = 1,
        hidden_nf: int = 64,
        n_layers: int = 4,
        in_edge_nf: int = 0,
        *,
        act_fn: Activation = "silu",
        attention: bool = False,
        residual: bool = True,
        coords_weight: float = 1.0,
        coords_agg: Literal["mean", "sum"] = "mean",
        norm_diff: bool = False,
        tanh: bool = False,
        update_coords: bool = True,
        velocity: bool = False,
        node_attr: bool = False,
        edges: EdgeMode = "complete",
    ) -> None:
        super().__init__()
        check_choice("edges", edges, ("complete", "graph"))
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.in_node_nf = in_node_nf
        self.hidden_nf = hidden_nf
        self.n_layers = n_layers
        self.in_edge_nf = in_edge_nf
        self.velocity = velocity
        self.node_attr = node_attr
        self.edges = edges
        self.edge_chunk_size: int | None = None
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        for index in range(n_layers):
            self.add_module(
                f"gcl_{index}",
                EGCL(
                    hidden_nf,
                    hidden_nf,
                    hidden_nf,
                    edges_in_d=in_edge_nf,
                    nodes_att_dim=in_node_nf if node_attr else 0,
                    act_fn=act_fn,
                    residual=residual,
                    attention=attention,
                    coords_weight=coords_weight,
                    coords_agg=coords_agg,
                    norm_diff=norm_diff,
                    tanh=tanh,
                    update_coords=update_coords,
                    velocity=velocity,
                ),
            )
        self.metadata: dict[str, Any] = {"task": "representation", "edges": edges}

    def layers(self) -> list[EGCL]:
        """The layers ``gcl_0 ... gcl_{n_layers-1}`` in order."""
        return [getattr(self, f"gcl_{index}") for index in range(self.n_layers)]

    def set_edge_chunk_size(self, max_edges: int | None) -> None:
        """Compute every layer's edge terms for at most ``max_edges`` edges at a time (``None``: all at once).

        Peak memory of the edge MLPs then scales with ``max_edges`` instead of the number of edges; results are
        equal to round-off; with gradients (forces, training) each chunk is recomputed in the backward pass
        (:mod:`zoo.nn.chunking`). A runtime setting, not part of the checkpoint. The ASE calculator's
        ``max_edges_per_chunk`` sets it for its calls.
        """
        self.edge_chunk_size = check_max_edges(max_edges)
        for layer in self.layers():
            layer.edge_chunk_size = self.edge_chunk_size

    def set_backend(self, backend: str | None) -> None:
        """Run every layer's message step through :mod:`zoo.kernels` with ``backend`` (``"auto"``, ``"torch"``,
        ``"compile"``, ``"triton"``, ``"torch_scatter"``), or the layers' own PyTorch code (``None``, default).

        A runtime setting, not part of the checkpoint; results equal to round-off (``zoo.load(...,
        backend=...)``, ``model.backend`` in a training config). Edge chunking, when set and needed, takes
        precedence. Gated (``attention``) and edge-weighted messages are fused, on every backend.

        Raises:
            KernelError: an unknown backend; layers that update coordinates (their per-edge messages feed the
                coordinate MLP, so they cannot be only summed); an activation the kernels lack.
        """
        for index, layer in enumerate(self.layers()):
            where = f"{type(self).__name__} layer gcl_{index}"
            if backend is not None and layer.update_coords:
                raise KernelError(
                    f"{where} updates coordinates from its per-edge messages; the fused kernels only sum messages "
                    "(EGNN models without coordinate updates, e.g. egnn-qm9 and egnn-potential, have a fused path)"
                )
            edge_dim = layer.edge_mlp[0].in_features - 2 * self.hidden_nf  # [|x_i - x_j|^2, a_ij]
            check_fusable(backend, layer.edge_mlp, self.hidden_nf, edge_dim, where)
        for layer in self.layers():
            layer.backend = backend

    def encode(
        self,
        h0: Tensor,
        x: Tensor,
        edge_index: Tensor,
        *,
        vel: Tensor | None = None,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
        edge_offset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        r""":math:`h^0 = \mathrm{embedding}(h_0)`, then every layer.

        Shapes:
            ``h0 [N, in_node_nf]``, ``x [N, n]``, ``edge_index [2, E]``, ``vel [N, n]``,
            ``edge_attr [E, in_edge_nf]``, ``edge_weight [E]``, ``edge_offset [E, n]``
            -> ``(h [N, hidden_nf], x [N, n])``.
        """
        h = self.embedding(h0)
        node_attr = h0 if self.node_attr else None
        for layer in self.layers():
            h, x = layer(
                h,
                edge_index,
                x,
                vel=vel,
                edge_attr=edge_attr,
                node_attr=node_attr,
                edge_weight=edge_weight,
                edge_offset=edge_offset,
            )
        return h, x

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{"pos": [N, 3], "node_features": [N, hidden_nf]}`` from ``graph.x`` and ``graph.pos``."""
        require_fields(graph, type(self).__name__, (*self.reads, *(("vel",) if self.velocity else ())))
        check_dtype(graph, self)
        edge_index, edge_offset = graph_edges(graph, self.edges)
        edge_attr = None
        if self.in_edge_nf:
            if self.edges != "graph":
                raise GraphError("edge attributes (in_edge_nf > 0) need edges='graph' and graph.edge_attr")
            require_fields(graph, type(self).__name__, ("edge_attr",))
            edge_attr = graph.edge_attr
        h, x = self.encode(
            graph.x,
            graph.pos,
            edge_index,
            vel=graph.vel if self.velocity else None,
            edge_attr=edge_attr,
            edge_offset=edge_offset,
        )
        return {"pos": x, "node_features": h}


class EGNNDynamics(EGNN):
    r"""EGNN for trajectory prediction (official ``EGNN_vel``, the paper's N-body model).

    Every layer has the velocity term; the edge attributes stay those of the input positions:

    .. math:: h_i^0 = \lVert v_i \rVert, \qquad a_{ij} = (q_i q_j, \lVert x_i - x_j \rVert^2), \qquad
        \hat x_i = x_i^{L}.

    Reads ``pos``, ``vel`` and, by ``features`` (see :func:`dynamics_features`), the particle charges
    ``x [N, 1]`` or the atomic numbers ``z``. Returns ``{"pos": [N, 3]}``, the predicted positions.

    Args:
        features: ``"charged"`` (the paper's charged N-body), ``"gravity"`` or ``"molecule"`` (SEGNO's MD22 inputs).
        hidden_nf, n_layers, act_fn, residual, attention, coords_weight, norm_diff, tanh, edges: as in :class:`EGNN`.
    """

    def __init__(
        self,
        features: DynamicsFeatures = "charged",
        hidden_nf: int = 64,
        n_layers: int = 4,
        *,
        act_fn: Activation = "silu",
        residual: bool = True,
        attention: bool = False,
        coords_weight: float = 1.0,
        norm_diff: bool = False,
        tanh: bool = False,
        edges: EdgeMode = "complete",
    ) -> None:
        check_choice("features", features, tuple(DYNAMICS_FEATURE_SIZES))
        in_node_nf, in_edge_nf = DYNAMICS_FEATURE_SIZES[features]
        super().__init__(
            in_node_nf,
            hidden_nf,
            n_layers,
            in_edge_nf,
            act_fn=act_fn,
            attention=attention,
            residual=residual,
            coords_weight=coords_weight,
            norm_diff=norm_diff,
            tanh=tanh,
            velocity=True,
            edges=edges,
        )
        self.features = features
        self.reads = ("pos", "vel", *{"charged": ("charges",), "gravity": (), "molecule": ("z",)}[features])
        self.metadata = {"task": "dynamics", "features": features, "edges": edges, "outputs": {"pos": "position"}}

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{"pos": [N, 3]}``: positions after the model's time horizon."""
        require_fields(graph, type(self).__name__, self.reads)
        check_dtype(graph, self)
        edge_index, edge_offset = graph_edges(graph, self.edges)
        radial, _ = self.gcl_0.edge_geometry(graph.pos, edge_index, edge_offset)
        h0, edge_attr = dynamics_features(graph, self.features, edge_index, radial)
        _, x = self.encode(h0, graph.pos, edge_index, vel=graph.vel, edge_attr=edge_attr, edge_offset=edge_offset)
        return {"pos": x}


class EGNNProperty(EGNN):
    r"""EGNN for molecular properties (official ``qm9/models.py``): invariant layers without coordinate updates,
    then a sum readout

    .. math:: \hat y = \sigma \cdot \phi_{\mathrm{graph}}\Big(\sum_i \phi_{\mathrm{node}}(h_i^L)\Big) + \mu

    (``node_dec``, ``graph_dec``; :math:`\mu, \sigma` the target's mean and mean absolute deviation used in
    training; 0 and 1 by default, which gives the raw network output). Node inputs are the official one-hot
    species times powers of the scaled atomic number, :math:`h^0_{i, (s, p)} = [z_i = s]\,(z_i / z_{\max})^p`,
    :math:`p = 0..` ``charge_power``.

    The official code pads molecules to a common size and masks padded atoms and self-pairs; here each
    molecule's complete graph without self-pairs gives the same numbers with no padding.

    Reads ``pos`` and ``z``. Returns ``{target: [B]}``.

    Args:
        target: name of the predicted property (QM9: ``homo``, ``lumo``, ``gap``, ``mu``, ``alpha``, ...).
        hidden_nf, n_layers, act_fn, attention, residual, node_attr, edges: as in :class:`EGNN`.
        species: the atomic numbers of the one-hot encoding, in order.
        charge_power: highest power of :math:`z / z_{\max}`.
        charge_scale: :math:`z_{\max}`; ``None`` means ``max(species)`` (9 for QM9, as upstream).
        target_mean, target_mad: :math:`\mu` and :math:`\sigma`.
    """

    reads = ("pos", "z")

    def __init__(
        self,
        target: str = "homo",
        hidden_nf: int = 128,
        n_layers: int = 7,
        *,
        species: Sequence[int] = (1, 6, 7, 8, 9),
        charge_power: int = 2,
        charge_scale: float | None = None,
        act_fn: Activation = "silu",
        attention: bool = True,
        residual: bool = True,
        node_attr: bool = False,
        edges: EdgeMode = "complete",
        target_mean: float = 0.0,
        target_mad: float = 1.0,
    ) -> None:
        species = [int(s) for s in species]
        if not species or len(set(species)) != len(species) or min(species) < 1:
            raise ValueError(f"species must be distinct atomic numbers >= 1, got {species}")
        super().__init__(
            len(species) * (charge_power + 1),
            hidden_nf,
            n_layers,
            act_fn=act_fn,
            attention=attention,
            residual=residual,
            update_coords=False,
            node_attr=node_attr,
            edges=edges,
        )
        self.target = target
        self.species = species
        self.charge_power = charge_power
        self.charge_scale = float(max(species) if charge_scale is None else charge_scale)
        self.target_mean = target_mean
        self.target_mad = target_mad
        act = activation(act_fn)
        self.node_dec = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), act, nn.Linear(hidden_nf, hidden_nf))
        self.graph_dec = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), act, nn.Linear(hidden_nf, 1))
        self.metadata = {
            "task": "property",
            "targets": [target],
            "units": {target: QM9_UNITS.get(target, "")},
            "species": species,
            "edges": edges,
        }

    def node_features(self, z: Tensor, dtype: torch.dtype) -> Tensor:
        """The official QM9 node inputs ``[N, len(species) * (charge_power + 1)]`` for atomic numbers ``z [N]``."""
        one_hot = nn.functional.one_hot(_species_index(z, self.species, type(self).__name__), len(self.species))
        powers = torch.arange(self.charge_power + 1, dtype=dtype, device=z.device)
        scaled = (z.to(dtype)[:, None] / self.charge_scale) ** powers  # [N, P + 1]
        return (one_hot.to(dtype)[:, :, None] * scaled[:, None, :]).reshape(z.shape[0], -1)

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{target: [B]}``: the property of each structure."""
        require_fields(graph, type(self).__name__, self.reads)
        check_dtype(graph, self)
        edge_index, edge_offset = graph_edges(graph, self.edges)
        h0 = self.node_features(graph.z, graph.pos.dtype)
        h, _ = self.encode(h0, graph.pos, edge_index, edge_offset=edge_offset)
        node = self.node_dec(h)  # [N, hidden]
        pooled = node.new_zeros(num_graphs(graph), node.shape[1]).index_add_(0, node_graph_index(graph), node)
        prediction = self.graph_dec(pooled).squeeze(1)  # [B]
        return {self.target: prediction * self.target_mad + self.target_mean}


class EGNNPotential(EGNN):
    r"""EGNN interatomic potential: invariant EGNN layers on the neighbour list, per-atom energies summed,
    conservative forces.

    .. math:: E = \sum_i \phi_{\mathrm{node}}(h_i^L), \qquad F_i = -\partial E / \partial x_i,
        \qquad m_{ij} = \phi_e(h_i, h_j, r_{ij}^2) \cdot u(r_{ij} / r_c)

    with :math:`h_i^0` a one-hot of the element and :math:`u` the polynomial envelope
    (:class:`zoo.geometry.PolynomialEnvelope`), so the energy is smooth where atoms cross the cutoff. Edge
    vectors come from :func:`zoo.graph.edge_vectors`, so periodic cells work.

    Reads ``pos``, ``z``, ``edge_index``, ``edge_shift`` (build them with
    ``radius_graph(graph, model.metadata["cutoff"])``), ``cell``. Returns ``{"energy": [B], "forces": [N, 3]}``
    (eV, eV/Å when trained on such data).

    Args:
        cutoff: :math:`r_c` in Å of the neighbour list and the envelope.
        hidden_nf, n_layers, act_fn, attention, residual: as in :class:`EGNN`.
        elements: the atomic numbers the model knows (one-hot order); ``None`` means 1..118.
        envelope_exponent: :math:`p` of the envelope.
    """

    reads = ("pos", "z", "edge_index", "edge_shift", "cell")
    weighted_edges = True

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_nf: int = 128,
        n_layers: int = 4,
        *,
        elements: Sequence[int] | None = None,
        act_fn: Activation = "silu",
        attention: bool = True,
        residual: bool = True,
        envelope_exponent: int = 5,
    ) -> None:
        elements = list(range(1, 119)) if elements is None else [int(e) for e in elements]
        if not elements or len(set(elements)) != len(elements) or min(elements) < 1:
            raise ValueError(f"elements must be distinct atomic numbers >= 1, got {elements}")
        super().__init__(
            len(elements),
            hidden_nf,
            n_layers,
            act_fn=act_fn,
            attention=attention,
            residual=residual,
            update_coords=False,
            edges="graph",
        )
        self.elements = elements
        self.cutoff = float(cutoff)
        self.envelope = PolynomialEnvelope(envelope_exponent, self.cutoff)
        act = activation(act_fn)
        self.node_dec = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), act, nn.Linear(hidden_nf, 1))
        self.metadata = {
            "task": "potential",
            "cutoff": self.cutoff,
            "elements": elements,
            "units": {"energy": "eV", "forces": "eV/A", "pos": "A"},
            "force_mode": "conservative",
            "stress": "conservative",
            "per_atom_energies": True,
        }

    def atom_energies(self, graph: Data) -> Tensor:
        """Per-atom energies ``[N]`` in eV (their sum per graph is the energy), differentiable in ``graph.pos``
        and ``graph.cell``."""
        edge_index, edge_offset = graph_edges(graph, "graph")
        radial, _ = self.gcl_0.edge_geometry(graph.pos, edge_index, edge_offset)
        weight = self.envelope(torch.sqrt(radial.squeeze(1)))  # [E]
        h0 = nn.functional.one_hot(_species_index(graph.z, self.elements, type(self).__name__), len(self.elements))
        h, _ = self.encode(h0.to(graph.pos.dtype), graph.pos, edge_index, edge_weight=weight, edge_offset=edge_offset)
        return self.node_dec(h).squeeze(1)  # [N]

    def forward(self, graph: Data, *, compute_stress: bool = False) -> dict[str, Tensor]:
        """``{"energy": [B], "energies": [N], "forces": [N, 3]}`` (+ ``"stress": [B, 3, 3]`` in eV/Å³ with
        ``compute_stress``); forces and stress are differentiable in training mode."""
        require_fields(graph, type(self).__name__, self.reads)
        check_dtype(graph, self)
        return conservative_outputs(self.atom_energies, graph, stress=compute_stress, create_graph=self.training)


# ------------------------------------------------------------------------------------------------- variants
_VARIANTS: dict[str, tuple[type[EGNN], dict[str, Any]]] = {
    "egnn": (EGNN, {}),
    "egnn-nbody": (EGNNDynamics, {"features": "charged", "hidden_nf": 64, "n_layers": 4}),
    "egnn-qm9": (EGNNProperty, {"hidden_nf": 128, "n_layers": 7, "attention": True}),
    "egnn-potential": (EGNNPotential, {"cutoff": 5.0, "hidden_nf": 128, "n_layers": 4}),
}


def _create_egnn(variant: str, **kwargs: Any) -> EGNN:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    cls, defaults = _VARIANTS[variant]
    return cls(**{**defaults, **kwargs})


@register_model("egnn", task="representation")
def egnn(**kwargs: Any) -> EGNN:
    """EGNN (Satorras et al. 2021) on node features ``x``: returns updated positions and node features."""
    return _create_egnn("egnn", **kwargs)


@register_model("egnn-nbody", task="dynamics")
def egnn_nbody(**kwargs: Any) -> EGNNDynamics:
    """EGNN_vel for the charged N-body system: 4 layers, 64 features, 134,020 parameters."""
    return _create_egnn("egnn-nbody", **kwargs)


@register_model("egnn-qm9", task="property")
def egnn_qm9(**kwargs: Any) -> EGNNProperty:
    """EGNN for one QM9 property: 7 layers, 128 features, attention, sum readout, 745,224 parameters."""
    return _create_egnn("egnn-qm9", **kwargs)


@register_model("egnn-potential", task="potential")
def egnn_potential(**kwargs: Any) -> EGNNPotential:
    """EGNN interatomic potential: energy as a sum over atoms, forces by autograd, periodic cells."""
    return _create_egnn("egnn-potential", **kwargs)
