r"""SEGNO: a second-order equivariant graph neural ODE (Liu et al., ICLR 2024).

One EGNN layer (:class:`zoo.models.egnn.EGCL` with its velocity MLP) is shared by all ``n_layers`` steps and
integrates positions and velocities. With the official N-body code (``yliukj/SEGNO``, ``N-body/models``) a step
:math:`\Delta t = 1/\tau` is semi-implicit Euler on an equivariant acceleration:

.. math::

    m_{ij} &= \phi_e\left(h_i, h_j, \lVert x_i - x_j \rVert^2, a_{ij}\right) \\
    a_i &= \frac{1}{\deg i} \sum_j \mathrm{clamp}_{\pm 100}\big((x_i - x_j)\,\phi_x(m_{ij})\big) \\
    v_i &\leftarrow v_i + \Delta t\, a_i, \qquad x_i \leftarrow x_i + \Delta t\, v_i \\
    h_i &\leftarrow h_i + \phi_h\big(h_i, \textstyle\sum_j m_{ij}\big)

(:math:`h` is updated last, from the messages of the same step). The official code fixes the layer's
:math:`\tau` at 8 whatever the number of iterations; ``dt`` defaults to ``1 / n_layers``, which equals it for the
default 8 iterations. The official MD22 code (``MD22/spatial_graph``) steps differently ("gated"):
:math:`v_i \leftarrow \phi_v(h_i)\, v_i + a_i`, :math:`x_i \leftarrow x_i + v_i`, and its :math:`\phi_x` has no
last bias.

Inputs are embedded as in the official training scripts (:func:`zoo.models.egnn.dynamics_features`): the speed
:math:`\lVert v_i \rVert` (and :math:`z_i / z_{\max}` for molecules) on the nodes, the charge product and
the squared distance at the input positions (plus the atomic numbers for molecules) on the edges. The official
N-body code only runs batches of exactly 100 systems of 5 particles (its mean is a hard-coded 500 x 2000
matrix); here any batch works.

Registered architectures: ``segno-nbody``, ``segno-md``.

Example:
    >>> import torch, zoo
    >>> from zoo.graph import AtomsGraph
    >>> model = zoo.create_model("segno-nbody").double()
    >>> graph = AtomsGraph.build(torch.randn(5, 3, dtype=torch.float64), vel=torch.randn(5, 3),
    ...                          charges=torch.tensor([[1.0], [-1.0], [1.0], [1.0], [-1.0]], dtype=torch.float64))
    >>> out = model(graph)
    >>> out["pos"].shape, out["vel"].shape
    (torch.Size([5, 3]), torch.Size([5, 3]))
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.models.egnn import (
    DYNAMICS_FEATURE_SIZES,
    EGCL,
    Activation,
    DynamicsFeatures,
    EdgeMode,
    check_choice,
    check_dtype,
    dynamics_features,
    graph_edges,
    require_fields,
)
from zoo.registry import register_model

__all__ = ["SEGNO", "checkpoint_filter_fn"]

Integrator = Literal["semi_implicit_euler", "gated"]


class SEGNO(nn.Module):
    r"""SEGNO: ``embedding`` of the node inputs, then one shared :class:`~zoo.models.egnn.EGCL` (``layer``)
    applied ``n_layers`` times as an integrator of :math:`(x, v)`.

    ``forward(graph)`` reads ``pos``, ``vel`` and, by ``features``, the particle charges ``x [N, 1]`` or the
    atomic numbers ``z``; it returns ``{"pos": [N, 3], "vel": [N, 3]}`` at the end of the horizon.
    :meth:`integrate` runs on plain tensors with coordinates in any dimension.

    Args:
        features: ``"charged"`` or ``"gravity"`` N-body, or ``"molecule"`` (MD22); see
            :func:`~zoo.models.egnn.dynamics_features`.
        hidden_nf: width of :math:`h` and of the MLPs.
        n_layers: number of integration steps :math:`\tau`.
        integrator: ``"semi_implicit_euler"`` (official N-body) or ``"gated"`` (official MD22).
        dt: step of ``"semi_implicit_euler"``; ``None`` means ``1 / n_layers``.
        coord_bias: bias in the last layer of :math:`\phi_x` (official: N-body yes, MD22 no).
        act_fn, residual, coords_weight, norm_diff, tanh: as in :class:`~zoo.models.egnn.EGCL` (the official
            N-body layer ignores ``norm_diff``, the MD22 one applies it; both default to ``False``).
        edges: ``"complete"`` (all pairs, official N-body; the gravity set's ``knn_graph(k=4)`` on 5 particles is
            the same graph) or ``"graph"`` (the graph's edges, e.g. MD22 bonds).

    The velocity MLP ``layer.coord_mlp_vel`` exists in both official models but only the gated integrator uses
    it; with ``"semi_implicit_euler"`` it is kept (for the official parameter count and state dicts) and gets no
    gradient.
    """

    def __init__(
        self,
        features: DynamicsFeatures = "charged",
        hidden_nf: int = 64,
        n_layers: int = 8,
        *,
        integrator: Integrator = "semi_implicit_euler",
        dt: float | None = None,
        coord_bias: bool = True,
        act_fn: Activation = "silu",
        residual: bool = True,
        coords_weight: float = 1.0,
        norm_diff: bool = False,
        tanh: bool = False,
        edges: EdgeMode = "complete",
    ) -> None:
        super().__init__()
        check_choice("features", features, tuple(DYNAMICS_FEATURE_SIZES))
        check_choice("integrator", integrator, ("semi_implicit_euler", "gated"))
        check_choice("edges", edges, ("complete", "graph"))
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if integrator == "gated" and dt is not None:
            raise ValueError("dt only applies to integrator='semi_implicit_euler'")
        in_node_nf, in_edge_nf = DYNAMICS_FEATURE_SIZES[features]
        self.features = features
        self.n_layers = n_layers
        self.integrator = integrator
        self.dt = 1.0 / n_layers if dt is None else float(dt)
        self.edges = edges
        self.reads = ("pos", "vel", *{"charged": ("charges",), "gravity": (), "molecule": ("z",)}[features])
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        self.layer = EGCL(
            hidden_nf,
            hidden_nf,
            hidden_nf,
            edges_in_d=in_edge_nf,
            act_fn=act_fn,
            residual=residual,
            coords_weight=coords_weight,
            norm_diff=norm_diff,
            tanh=tanh,
            velocity=True,
            coord_bias=coord_bias,
        )
        self.metadata: dict[str, Any] = {
            "task": "dynamics",
            "features": features,
            "edges": edges,
            "outputs": {"pos": "position", "vel": "vector"},
        }

    def integrate(
        self,
        h0: Tensor,
        x: Tensor,
        v: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        edge_offset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""``n_layers`` steps of the shared layer from :math:`h^0 = \mathrm{embedding}(h_0)`.

        Shapes:
            ``h0 [N, F_node]``, ``x [N, n]``, ``v [N, n]``, ``edge_index [2, E]``, ``edge_attr [E, F_edge]``,
            ``edge_offset [E, n]`` -> ``(h [N, hidden_nf], x [N, n], v [N, n])``.
        """
        layer = self.layer
        target = edge_index[1]
        h = self.embedding(h0)
        for _ in range(self.n_layers):
            radial, coord_diff = layer.edge_geometry(x, edge_index, edge_offset)
            message, aggregated = layer.message_and_aggregate(h, edge_index, radial, edge_attr)
            acceleration = layer.coord_term(coord_diff, message, target, x.shape[0])  # [N, n]
            if self.integrator == "semi_implicit_euler":
                v = v + acceleration * self.dt
                x = x + v * self.dt
            else:
                v = layer.coord_mlp_vel(h) * v + acceleration
                x = x + v
            h = layer.node_update(h, aggregated)
        return h, x, v

    def forward(self, graph: Data) -> dict[str, Tensor]:
        """``{"pos": [N, 3], "vel": [N, 3]}`` after ``n_layers`` steps."""
        require_fields(graph, type(self).__name__, self.reads)
        check_dtype(graph, self)
        edge_index, edge_offset = graph_edges(graph, self.edges)
        radial, _ = self.layer.edge_geometry(graph.pos, edge_index, edge_offset)
        h0, edge_attr = dynamics_features(graph, self.features, edge_index, radial)
        _, x, v = self.integrate(h0, graph.pos, graph.vel, edge_index, edge_attr, edge_offset)
        return {"pos": x, "vel": v}


# ------------------------------------------------------------------------------------------------ weight remap
def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: SEGNO) -> dict[str, Tensor]:
    """Map an official SEGNO state dict to this implementation; zoo state dicts pass through unchanged.

    The official shared layer is called ``module`` (renamed ``layer`` here: ``module`` reads as a DDP wrapper),
    and the official MD22 model carries a ``forget`` linear layer that its forward never uses (dropped).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("forget."):
            continue
        if key.startswith("module."):
            key = "layer." + key[len("module.") :]
        out[key] = value
    expected = set(model.state_dict())
    if set(out) != expected:
        missing, unexpected = sorted(expected - set(out)), sorted(set(out) - expected)
        raise KeyError(f"state dict does not match SEGNO: missing {missing}, unexpected {unexpected}")
    return out


# ---------------------------------------------------------------------------------------------------- variants
_VARIANTS: dict[str, dict[str, Any]] = {
    "segno-nbody": {"features": "charged", "hidden_nf": 64, "n_layers": 8},
    "segno-md": {
        "features": "molecule",
        "hidden_nf": 64,
        "n_layers": 5,
        "integrator": "gated",
        "coord_bias": False,
        "edges": "graph",
    },
}


_VARIANT_METADATA: dict[str, dict[str, Any]] = {
    "segno-nbody": {"units": {"pos": "simulation units", "vel": "simulation units"}},
    "segno-md": {"units": {"pos": "A", "vel": "A per frame"}, "bond_cutoff": 2.5},
}


def _create_segno(variant: str, **kwargs: Any) -> SEGNO:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    model = SEGNO(**{**_VARIANTS[variant], **kwargs})
    model.metadata.update(_VARIANT_METADATA[variant])
    return model


@register_model("segno-nbody", task="dynamics")
def segno_nbody(**kwargs: Any) -> SEGNO:
    """SEGNO for the charged N-body system: 8 steps of one shared layer, 64 features, 33,602 parameters."""
    return _create_segno("segno-nbody", **kwargs)


@register_model("segno-md", task="dynamics")
def segno_md(**kwargs: Any) -> SEGNO:
    """SEGNO for MD22 trajectories: 5 gated steps on the bond graph, inputs |v|, z/z_max, (z_i, z_j, r^2)."""
    return _create_segno("segno-md", **kwargs)
