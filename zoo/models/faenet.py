r"""FAENet: frame-averaging equivariant GNN for materials (Duval et al., ICML 2023).

FAENet is a message-passing network that reads raw edge *vectors* (so it is not equivariant by itself) and
gets its symmetry from frame averaging (:mod:`zoo.models.frame_averaging`): the structure is expressed in its
PCA frames, the network runs on each, energies are averaged and direct forces rotated back. The layers, with
:math:`r_{ij} = x_j - x_i + S_{ij} C` the edge vector of :func:`zoo.graph.edge_vectors` and
:math:`\sigma` the activation (``swish`` = SiLU):

.. math::

    e_{ij} &= \sigma\big([W_{e1} r_{ij} \,\|\, W_{e12}\, \mathrm{RBF}(\lVert r_{ij}\rVert)]\big)
        \quad [\to \sigma(W_{e2} e_{ij})] \\
    h_i &= \sigma\big(W [\mathrm{emb}(z_i) \,\|\, \mathrm{tag}(t_i) \,\|\, \phi(z_i) \,\|\,
        \mathrm{period}(z_i) \,\|\, \mathrm{group}(z_i)]\big) \quad [\to \sigma(W_2 h_i)] \\
    h_i &\leftarrow h_i + \mathrm{Interaction}(h, e)_i \quad \text{(``num_interactions`` times)} \\
    E &= \sum_i w_i\, W_2\, \sigma(W_1 h_i), \qquad F_i = \mathrm{decoder}(h_i)

with :math:`\phi(z)` fixed (or learned) standardised physical properties of the element, shipped in
:mod:`zoo.models.faenet_elements`. An interaction of type ``base`` is
:math:`h_i' = \sigma(W_h\, \mathrm{GraphNorm}(\sum_j h_j \odot \sigma(W_g[e_{ij} \| h_j \| h_i])))`; the
``updownscale*`` types project :math:`h` to ``num_filters`` channels around the aggregation, ``simple`` uses
:math:`e_{ij}` directly, ``updown_local_env`` adds the local environment :math:`\sum_j e_{ij}`.

The arithmetic and parameter names are those of the reference package ``faenet`` 0.1.3 (MIT, the authors'
release), so its state dicts load with ``strict=True``; golden tensors in ``tests/fixtures/faenet`` (made by
``scripts/golden/make_faenet_golden.py``) pin the outputs to it, frame averaging included. Conventions kept
from upstream that a user should know:

* GraphNorm is called without a batch vector upstream: its statistics pool *all atoms of the batch*, so a
  graph's prediction depends on the other graphs of its batch. Here the pooling is over the atoms of each
  frame copy (``graph.frame`` from frame averaging), which is what upstream's per-frame loop does. With
  several graphs and several frames the frames of different graphs are paired by their order, which is not
  equivariant: exact symmetry of a batch needs ``graph_norm=False`` or one graph per call.
* The force decoders' BatchNorm uses running statistics in eval mode and batch statistics in training.
* ``regress_forces="direct_with_gradient_target"`` predicts the same direct forces as ``"direct"``; the energy
  gradient it is regularised towards is a training target, the trainer's business.
* Atomic numbers 1..84 only (upstream's embedding table); the period/group embeddings do not cover the
  f-block without a group (Ce..Lu, group 19), which raises, as it does upstream.

Registered architectures: ``faenet`` (upstream defaults, all E(3) frames), ``faenet-is2re`` (OC20 IS2RE: 2D
frames, one random proper frame), ``faenet-s2ef`` (OC20 S2EF-2M: 2D frames, one random frame, direct forces),
``faenet-qm9`` (QM9: 3D frames, one random frame), with the official configurations (``configs-faenet/`` of
``vict0rsch/faenet``). Frame modes map as ``fa_method="all" | "stochastic" | "det"`` -> ``frames``,
``frame_averaging="3D"`` -> ``group="E3"``, ``"2D"`` -> ``"E2"``, and the ``se3-`` methods to ``"SE3"``/``"SE2"``.

Example:
    >>> import torch, zoo
    >>> from zoo.testing import molecule_graph
    >>> model = zoo.create_model("faenet-qm9", hidden_channels=32, num_filters=16, num_gaussians=8,
    ...                          pg_hidden_channels=4, num_interactions=1, frames="all", regress_forces="direct")
    >>> out = model.double().eval()(molecule_graph(6))
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([6, 3]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.graph import GraphError, edge_vectors, node_graph_index, num_graphs
from zoo.models import faenet_elements
from zoo.models.frame_averaging import FRAME_MODES, FrameMode, frame_average, resolve_group
from zoo.registry import register_model

__all__ = [
    "EmbeddingBlock",
    "FAENet",
    "ForceDecoder",
    "GaussianSmearing",
    "GraphNorm",
    "InteractionBlock",
    "OutputBlock",
    "PhysEmbedding",
]

MessagePassingType = Literal["base", "simple", "updownscale", "updownscale_base", "updown_local_env"]
SkipConnection = Literal["add", "concat", "concat_atom"]
EnergyHead = Literal["weighted-av-initial-embeds", "weighted-av-final-embeds"]
ForceDecoderType = Literal["simple", "mlp", "res", "res_updown"]
MP_TYPES = ("base", "simple", "updownscale", "updownscale_base", "updown_local_env")
SKIP_CONNECTIONS = (False, None, "", "add", "concat", "concat_atom")
ENERGY_HEADS = (None, "", False, "weighted-av-initial-embeds", "weighted-av-final-embeds")
FORCE_MODES = (None, False, "", "direct", "direct_with_gradient_target")
NUM_ATOM_TYPES = 85  # upstream's atom embedding: z = 0..84
DEFAULT_FORCE_DECODERS: dict[str, dict[str, Any]] = {
    "simple": {"hidden_channels": 128, "norm": "batch1d"},
    "mlp": {"hidden_channels": 256, "norm": "batch1d"},
    "res": {"hidden_channels": 128, "norm": "batch1d"},
    "res_updown": {"hidden_channels": 128, "norm": "batch1d"},
}


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def activation_function(name: str) -> Callable[[Tensor], Tensor]:
    """``"swish"`` (SiLU) or the name of a function of ``torch.nn.functional`` (``"relu"``, ``"gelu"``, ...)."""
    if name == "swish":
        return nn.functional.silu
    function = getattr(nn.functional, name, None)
    if not callable(function):
        raise ValueError(f"act must be 'swish' or a function of torch.nn.functional, got {name!r}")
    return function


class Activation(nn.Module):
    """An activation function as a parameter-free module (keeps upstream's ``nn.Sequential`` indices)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.function = activation_function(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)


def _xavier(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


def _scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """:math:`\\sum` of ``values [E, F]`` over equal ``index [E]``: ``[size, F]``."""
    return values.new_zeros(size, values.shape[1]).index_add_(0, index, values)


# ---------------------------------------------------------------------------------------------------- blocks
class GaussianSmearing(nn.Module):
    r"""Gaussian radial basis :math:`\exp(-\frac{(d - \mu_k)^2}{2 \Delta^2})`, :math:`\mu_k` evenly spaced on
    ``[start, stop]`` and :math:`\Delta` their spacing (computed in float32, as upstream). ``[E] -> [E, K]``."""

    def __init__(self, start: float = 0.0, stop: float = 5.0, num_gaussians: int = 50) -> None:
        super().__init__()
        offset = torch.linspace(start, stop, num_gaussians)
        self.coeff = -0.5 / (offset[1] - offset[0]).item() ** 2
        self.register_buffer("offset", offset)

    def forward(self, dist: Tensor) -> Tensor:
        return torch.exp(self.coeff * (dist[:, None] - self.offset[None, :]) ** 2)


class PhysEmbedding(nn.Module):
    r"""Element tables of FAENet: standardised physical properties ``properties [86, 14]`` (a buffer, or a
    parameter with ``props_grad``) and ``period``/``group`` indices ``[101]``, from
    :mod:`zoo.models.faenet_elements`.

    Args:
        props: build the property table.
        props_grad: make it a learnable parameter.
        pg: build the period and group tables.
    """

    def __init__(self, props: bool = True, props_grad: bool = False, pg: bool = False) -> None:
        super().__init__()
        self.props = props
        self.pg = pg
        self.period_size = faenet_elements.PERIOD_SIZE if pg else 0
        self.group_size = faenet_elements.GROUP_SIZE if pg else 0
        self.n_properties = len(faenet_elements.PROPERTY_NAMES) if props else 0
        self.register_buffer("group", torch.tensor(faenet_elements.GROUP) if pg else None)
        self.register_buffer("period", torch.tensor(faenet_elements.PERIOD) if pg else None)
        if props:
            properties = torch.tensor(faenet_elements.PROPERTIES, dtype=torch.float32)
            if props_grad:
                self.properties = nn.Parameter(properties)
            else:
                self.register_buffer("properties", properties)


class EmbeddingBlock(nn.Module):
    r"""Atom and edge embeddings (upstream ``EmbeddingBlock``).

    .. math::

        h_i = \sigma\big(W [\mathrm{emb}(z_i) \| \mathrm{tag}(t_i) \| \phi(z_i) \| \mathrm{period}(z_i) \|
            \mathrm{group}(z_i)]\big), \qquad
        e_{ij} = \sigma\big([W_{e1} r_{ij} \| W_{e12} \mathrm{RBF}_{ij}]\big)

    (each followed by a second layer with ``second_layer_MLP``). :math:`\phi` is linear-projected to
    ``phys_hidden_channels`` when that is positive (and then learned), else used as it is.

    Shapes:
        ``z [N]``, ``rel_pos [E, 3]``, ``edge_attr [E, num_gaussians]``, ``tag [N]`` ->
        ``(h [N, hidden_channels], e [E, num_filters])``.
    """

    def __init__(
        self,
        num_gaussians: int,
        num_filters: int,
        hidden_channels: int,
        tag_hidden_channels: int,
        pg_hidden_channels: int,
        phys_hidden_channels: int,
        phys_embeds: bool,
        act: str,
        second_layer_MLP: bool,
    ) -> None:
        super().__init__()
        self.act = activation_function(act)
        self.use_tag = tag_hidden_channels > 0
        self.use_pg = pg_hidden_channels > 0
        self.use_mlp_phys = phys_hidden_channels > 0 and phys_embeds
        self.second_layer_MLP = second_layer_MLP
        self.phys_emb = PhysEmbedding(props=phys_embeds, props_grad=phys_hidden_channels > 0, pg=self.use_pg)
        if self.use_mlp_phys:
            self.phys_lin = nn.Linear(self.phys_emb.n_properties, phys_hidden_channels)
        else:
            phys_hidden_channels = self.phys_emb.n_properties
        if self.use_pg:
            self.period_embedding = nn.Embedding(self.phys_emb.period_size, pg_hidden_channels)
            self.group_embedding = nn.Embedding(self.phys_emb.group_size, pg_hidden_channels)
        if self.use_tag:
            self.tag_embedding = nn.Embedding(3, tag_hidden_channels)
        atom_channels = hidden_channels - tag_hidden_channels - phys_hidden_channels - 2 * pg_hidden_channels
        if atom_channels <= 0:
            raise ValueError(
                f"hidden_channels ({hidden_channels}) must exceed tag_hidden_channels + physics channels "
                f"({phys_hidden_channels}) + 2 * pg_hidden_channels"
            )
        self.emb = nn.Embedding(NUM_ATOM_TYPES, atom_channels)
        self.lin = nn.Linear(hidden_channels, hidden_channels)
        if second_layer_MLP:
            self.lin_2 = nn.Linear(hidden_channels, hidden_channels)
        self.lin_e1 = nn.Linear(3, num_filters // 2)
        self.lin_e12 = nn.Linear(num_gaussians, num_filters - num_filters // 2)
        if second_layer_MLP:
            self.lin_e2 = nn.Linear(num_filters, num_filters)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream initialisation: Xavier-uniform weights, zero biases, N(0, 1) embeddings."""
        self.emb.reset_parameters()
        if self.use_mlp_phys:
            nn.init.xavier_uniform_(self.phys_lin.weight)
        if self.use_tag:
            self.tag_embedding.reset_parameters()
        if self.use_pg:
            self.period_embedding.reset_parameters()
            self.group_embedding.reset_parameters()
        for name in ("lin", "lin_e1", "lin_2", "lin_e2"):
            if hasattr(self, name):
                _xavier(getattr(self, name))

    def forward(self, z: Tensor, rel_pos: Tensor, edge_attr: Tensor, tag: Tensor | None) -> tuple[Tensor, Tensor]:
        e = self.act(torch.cat([self.lin_e1(rel_pos), self.lin_e12(edge_attr)], dim=1))  # [E, num_filters]
        if self.second_layer_MLP:
            e = self.act(self.lin_e2(e))
        parts = [self.emb(z)]
        if self.use_tag:
            parts.append(self.tag_embedding(tag))
        if self.phys_emb.n_properties > 0:
            phys = self.phys_emb.properties[z]  # [N, 14]
            parts.append(self.phys_lin(phys) if self.use_mlp_phys else phys)
        if self.use_pg:
            parts += [self.period_embedding(self.phys_emb.period[z]), self.group_embedding(self.phys_emb.group[z])]
        h = self.act(self.lin(torch.cat(parts, dim=1)))  # [N, hidden]
        if self.second_layer_MLP:
            h = self.act(self.lin_2(h))
        return h, e


class GraphNorm(nn.Module):
    r"""GraphNorm (Cai et al., 2021) over groups of nodes, with PyG's parameters ``weight``, ``bias``,
    ``mean_scale``:

    .. math:: \hat x = x - \alpha \odot \mu_g, \qquad y = \gamma \odot \hat x / \sqrt{\mathrm{mean}_g(\hat x^2)
        + \epsilon} + \beta

    with means over the nodes of each group :math:`g`. Shapes: ``x [N, C]``, ``group [N]`` -> ``[N, C]``.
    """

    def __init__(self, in_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(in_channels))
        self.bias = nn.Parameter(torch.zeros(in_channels))
        self.mean_scale = nn.Parameter(torch.ones(in_channels))

    def forward(self, x: Tensor, group: Tensor, num_groups: int) -> Tensor:
        count = torch.bincount(group, minlength=num_groups).clamp(min=1).to(x.dtype)[:, None]  # [G, 1]
        mean = _scatter_sum(x, group, num_groups) / count
        out = x - mean[group] * self.mean_scale
        var = _scatter_sum(out**2, group, num_groups) / count
        return self.weight * out / (var + self.eps).sqrt()[group] + self.bias


class InteractionBlock(nn.Module):
    r"""One message-passing update (upstream ``InteractionBlock``); messages :math:`x_j \odot W_{ij}` are summed
    at the target :math:`i`.

    ========================  ==========================================================================
    ``base``                  :math:`W = \sigma(W_g [e \| h_j \| h_i])`, :math:`h' = \sigma(W_h\, \mathrm{GN}(\sum))`
    ``simple``                :math:`W = e` (so ``num_filters = hidden_channels``), then as ``base``
    ``updownscale``           :math:`W = \sigma(W_g e)`; sum of :math:`\sigma(W_{\downarrow} h)_j \odot W`, GN, up
    ``updownscale_base``      as ``updownscale`` with :math:`W = \sigma(W_g [e \| h_j \| h_i])`
    ``updown_local_env``      :math:`W = W_g e`; :math:`W_{\uparrow}[\mathrm{GN}(\sum) \| \sum_j e_{ij}]`
    ========================  ==========================================================================

    (GN: :class:`GraphNorm` followed by :math:`\sigma`, when ``graph_norm``; ``complex_mp`` appends
    :math:`\sigma(W_o h')`.)

    Shapes:
        ``h [N, hidden]``, ``edge_index [2, E]``, ``e [E, num_filters]``, ``norm_group [N]`` -> ``[N, hidden]``.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_filters: int,
        act: str,
        mp_type: MessagePassingType,
        complex_mp: bool,
        graph_norm: bool,
    ) -> None:
        super().__init__()
        _check_choice("mp_type", mp_type, MP_TYPES)
        self.act = activation_function(act)
        self.mp_type = mp_type
        self.complex_mp = complex_mp
        self.use_graph_norm = graph_norm
        if graph_norm:
            self.graph_norm = GraphNorm(num_filters if "updown" in mp_type else hidden_channels)
        if mp_type == "simple":
            self.lin_h = nn.Linear(hidden_channels, hidden_channels)
        elif mp_type == "base":
            self.lin_geom = nn.Linear(num_filters + 2 * hidden_channels, hidden_channels)
            self.lin_h = nn.Linear(hidden_channels, hidden_channels)
        else:
            geom_in = num_filters + (2 * hidden_channels if mp_type == "updownscale_base" else 0)
            up_in = 2 * num_filters if mp_type == "updown_local_env" else num_filters
            self.lin_down = nn.Linear(hidden_channels, num_filters)
            self.lin_geom = nn.Linear(geom_in, num_filters)
            self.lin_up = nn.Linear(up_in, hidden_channels)
        if complex_mp:
            self.other_mlp = nn.Linear(hidden_channels, hidden_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream initialisation: Xavier-uniform weights, zero biases."""
        for name in ("lin_geom", "lin_h", "lin_down", "lin_up", "other_mlp"):
            if hasattr(self, name):
                _xavier(getattr(self, name))

    def _normalise(self, h: Tensor, norm_group: Tensor, num_groups: int) -> Tensor:
        return self.act(self.graph_norm(h, norm_group, num_groups)) if self.use_graph_norm else h

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, norm_group: Tensor, num_groups: int) -> Tensor:
        source, target = edge_index
        num_nodes = h.shape[0]
        if self.mp_type in ("base", "updownscale_base"):
            e = torch.cat([e, h[source], h[target]], dim=1)
        if self.mp_type in ("base", "updownscale", "updownscale_base"):
            e = self.act(self.lin_geom(e))  # [E, F]
        if self.mp_type in ("updownscale", "updownscale_base"):
            h = self.act(self.lin_down(h))  # [N, F]
            h = _scatter_sum(h[source] * e, target, num_nodes)
            h = self.act(self.lin_up(self._normalise(h, norm_group, num_groups)))
        elif self.mp_type == "updown_local_env":
            h = self.act(self.lin_down(h))
            local_env = _scatter_sum(e, target, num_nodes)  # [N, F]
            h = _scatter_sum(h[source] * self.lin_geom(e), target, num_nodes)
            h = self.lin_up(torch.cat([self._normalise(h, norm_group, num_groups), local_env], dim=1))
        else:  # base, simple
            h = _scatter_sum(h[source] * e, target, num_nodes)
            h = self.act(self.lin_h(self._normalise(h, norm_group, num_groups)))
        if self.complex_mp:
            h = self.act(self.other_mlp(h))
        return h


class OutputBlock(nn.Module):
    r"""Energy readout :math:`E_g = \sum_{i \in g} \alpha_i\, W_2 \sigma(W_1 h_i)` (upstream ``OutputBlock``),
    :math:`\alpha_i = W_w h_i` for ``energy_head="weighted-av-final-embeds"``, given for
    ``"weighted-av-initial-embeds"``, 1 otherwise. Shapes: ``h [N, hidden]``, ``batch [N]`` -> ``[B, 1]``."""

    def __init__(self, energy_head: str | None, hidden_channels: int, act: str) -> None:
        super().__init__()
        self.energy_head = energy_head
        self.act = activation_function(act)
        self.lin1 = nn.Linear(hidden_channels, hidden_channels // 2)
        self.lin2 = nn.Linear(hidden_channels // 2, 1)
        if energy_head == "weighted-av-final-embeds":
            self.w_lin = nn.Linear(hidden_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream initialisation: Xavier-uniform weights, zero biases."""
        for name in ("lin1", "lin2", "w_lin"):
            if hasattr(self, name):
                _xavier(getattr(self, name))

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int, alpha: Tensor | None) -> Tensor:
        if self.energy_head == "weighted-av-final-embeds":
            alpha = self.w_lin(h)
        out = self.lin2(self.act(self.lin1(h)))  # [N, 1]
        if self.energy_head in ("weighted-av-initial-embeds", "weighted-av-final-embeds"):
            out = out * alpha
        return _scatter_sum(out, batch, num_graphs)


class ForceDecoder(nn.Module):
    r"""Direct force head :math:`F_i = \mathrm{MLP}(h_i)` (upstream ``ForceDecoder``; ``[N, C] -> [N, 3]``).

    ``simple``: Linear-act-Linear; ``mlp``: Linear-norm-act-Linear; ``res``: two norm-act residual layers at the
    input width, then ``mlp``; ``res_updown``: the residual branch goes through ``hidden_channels``. ``norm`` is
    ``"batch1d"`` (default), ``"layer"`` or ``None``/``""`` (none).

    Args:
        type: the decoder type.
        input_channels: width of :math:`h`.
        model_configs: ``{type: {"hidden_channels": int, "norm": str | None}}`` (the official configs' layout).
        act: activation name.
    """

    def __init__(self, type: ForceDecoderType, input_channels: int, model_configs: Mapping[str, Any], act: str) -> None:
        super().__init__()
        _check_choice("force_decoder_type", type, ("simple", "mlp", "res", "res_updown"))
        if type not in model_configs or "hidden_channels" not in model_configs[type]:
            raise ValueError(f"force_decoder_model_config needs {{{type!r}: {{'hidden_channels': ...}}}}")
        self.type = type
        config = model_configs[type]
        hidden = int(config["hidden_channels"])
        norm = config.get("norm", "batch1d")
        _check_choice("force decoder norm", norm, ("batch1d", "layer", "", None))

        def norm_layer(width: int) -> nn.Module:
            if norm == "batch1d":
                return nn.BatchNorm1d(width)
            return nn.LayerNorm(width) if norm == "layer" else nn.Identity()

        def block(width_in: int, width_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(width_in, width_out), norm_layer(width_out), Activation(act))

        def head(width_in: int) -> nn.Sequential:
            return nn.Sequential(*block(width_in, hidden), nn.Linear(hidden, 3))

        if type == "simple":
            self.model = nn.Sequential(nn.Linear(input_channels, hidden), Activation(act), nn.Linear(hidden, 3))
        elif type == "mlp":
            self.model = head(input_channels)
        elif type == "res":
            self.mlp_1 = block(input_channels, input_channels)
            self.mlp_2 = block(input_channels, input_channels)
            self.mlp_3 = head(input_channels)
        else:
            self.mlp_1 = block(input_channels, hidden)
            self.mlp_2 = block(hidden, hidden)
            self.mlp_3 = block(hidden, input_channels)
            self.mlp_4 = head(input_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream initialisation: each layer's own."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, h: Tensor) -> Tensor:
        if self.type == "res":
            return self.mlp_3(self.mlp_2(self.mlp_1(h)) + h)
        if self.type == "res_updown":
            return self.mlp_4(self.mlp_3(self.mlp_2(self.mlp_1(h))) + h)
        return self.model(h)


# ----------------------------------------------------------------------------------------------------- model
class FAENet(nn.Module):
    r"""FAENet (module docstring) with frame averaging built in.

    Reads ``pos``, ``z``, ``cell``, ``edge_index``, ``edge_shift`` (build them with
    ``radius_graph(graph, model.metadata["cutoff"], max_neighbors=model.metadata["max_neighbors"])``) and, with
    ``tag_hidden_channels > 0``, ``tags`` (OC20: 0 subsurface, 1 surface, 2 adsorbate). Returns
    ``{"energy": [B]}`` and, with direct forces, ``"forces": [N, 3]``.

    Args:
        cutoff: radius of the neighbour list and top of the Gaussian basis, Å.
        act: ``"swish"`` or a ``torch.nn.functional`` name.
        complex_mp: second linear layer at the end of each interaction.
        max_num_neighbors: the neighbour-list cap the model was trained with (metadata; edges come with the graph).
        num_gaussians, num_filters, hidden_channels: basis size, edge width, node width.
        tag_hidden_channels, pg_hidden_channels: widths of the tag and of each period/group embedding (0: none).
        phys_hidden_channels: width of the learned projection of the physical properties (0: fixed properties).
        phys_embeds: use the physical properties.
        num_interactions: number of interaction blocks.
        mp_type: interaction type (:class:`InteractionBlock`).
        graph_norm: GraphNorm in the interactions.
        second_layer_MLP: second layer in the atom and edge embeddings.
        skip_co: ``"concat"`` (a linear layer mixes the energies read out before every interaction and at the
            end), ``"add"`` (their sum), ``"concat_atom"`` (mixes the atom states) or ``False``.
        energy_head: ``None``, ``"weighted-av-initial-embeds"`` or ``"weighted-av-final-embeds"``.
        regress_forces: ``None``/``""`` (energy only), ``"direct"`` or ``"direct_with_gradient_target"``.
        force_decoder_type: ``"simple"``, ``"mlp"``, ``"res"`` or ``"res_updown"``.
        force_decoder_model_config: ``{type: {"hidden_channels", "norm"}}``; ``None``: the official configs'.
        frames: ``"all"``, ``"stochastic"``, ``"det"`` or ``None`` (no frame averaging: the bare network).
        group: ``"E3"``, ``"SE3"``, ``"E2"``/``"2D"`` or ``"SE2"``.
    """

    def __init__(
        self,
        cutoff: float = 6.0,
        act: str = "swish",
        complex_mp: bool = False,
        max_num_neighbors: int = 40,
        num_gaussians: int = 50,
        num_filters: int = 128,
        hidden_channels: int = 128,
        tag_hidden_channels: int = 32,
        pg_hidden_channels: int = 32,
        phys_hidden_channels: int = 0,
        phys_embeds: bool = True,
        num_interactions: int = 4,
        mp_type: MessagePassingType = "updownscale_base",
        graph_norm: bool = True,
        second_layer_MLP: bool = True,
        skip_co: SkipConnection | bool | None = "concat",
        energy_head: EnergyHead | None = None,
        regress_forces: str | bool | None = None,
        force_decoder_type: ForceDecoderType = "mlp",
        force_decoder_model_config: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        frames: FrameMode | None = "all",
        group: str = "E3",
    ) -> None:
        super().__init__()
        _check_choice("skip_co", skip_co, SKIP_CONNECTIONS)
        _check_choice("energy_head", energy_head, ENERGY_HEADS)
        _check_choice("regress_forces", regress_forces, FORCE_MODES)
        _check_choice("frames", frames, (*FRAME_MODES, None))
        self.group = resolve_group(group)
        self.frames = frames
        if mp_type == "simple":
            num_filters = hidden_channels
        self.cutoff = float(cutoff)
        self.hidden_channels = hidden_channels
        self.num_interactions = num_interactions
        self.skip_co = skip_co or None
        self.energy_head = energy_head or None
        self.regress_forces = regress_forces or None
        self.use_tags = tag_hidden_channels > 0
        self.act = activation_function(act)
        self.distance_expansion = GaussianSmearing(0.0, self.cutoff, num_gaussians)
        self.embed_block = EmbeddingBlock(
            num_gaussians,
            num_filters,
            hidden_channels,
            tag_hidden_channels,
            pg_hidden_channels,
            phys_hidden_channels,
            phys_embeds,
            act,
            second_layer_MLP,
        )
        self.interaction_blocks = nn.ModuleList(
            InteractionBlock(hidden_channels, num_filters, act, mp_type, complex_mp, graph_norm)
            for _ in range(num_interactions)
        )
        self.output_block = OutputBlock(self.energy_head, hidden_channels, act)
        if self.energy_head == "weighted-av-initial-embeds":
            self.w_lin = nn.Linear(hidden_channels, 1)
        if self.regress_forces:
            configs = DEFAULT_FORCE_DECODERS if force_decoder_model_config is None else force_decoder_model_config
            self.decoder = ForceDecoder(force_decoder_type, hidden_channels, configs, act)
        if self.skip_co == "concat":
            self.mlp_skip_co = nn.Linear(num_interactions + 1, 1)
        elif self.skip_co == "concat_atom":
            self.mlp_skip_co = nn.Linear((num_interactions + 1) * hidden_channels, hidden_channels)
        self.reads = ("pos", "z", "cell", "edge_index", "edge_shift", *(("tags",) if self.use_tags else ()))
        self.metadata: dict[str, Any] = {
            "task": "potential" if self.regress_forces else "property",
            "cutoff": self.cutoff,
            "max_neighbors": max_num_neighbors,
            "elements": list(range(1, NUM_ATOM_TYPES)),
            "units": {"energy": "eV", "forces": "eV/A", "pos": "A"},
            "force_mode": "direct" if self.regress_forces else None,
            "frame_averaging": {"frames": frames, "group": self.group},
        }

    def _check_inputs(self, graph: Data) -> None:
        for field in self.reads:
            if getattr(graph, field, None) is None:
                hint = " (build edges with zoo.graph.radius_graph)" if field.startswith("edge") else ""
                raise GraphError(f"FAENet reads graph.{field}, which this graph does not have{hint}")
        if self.use_tags and graph.tags.numel() and (int(graph.tags.min()) < 0 or int(graph.tags.max()) > 2):
            raise GraphError("FAENet reads OC20 tags 0 (subsurface), 1 (surface), 2 (adsorbate); got other values")
        z = graph.z
        if z.numel() and (int(z.min()) < 1 or int(z.max()) >= NUM_ATOM_TYPES):
            raise GraphError(f"FAENet knows atomic numbers 1..{NUM_ATOM_TYPES - 1}, got {sorted(set(z.tolist()))}")
        embed = self.embed_block
        if embed.use_pg and z.numel():
            groups, periods = embed.phys_emb.group[z], embed.phys_emb.period[z]
            bad = (groups >= embed.phys_emb.group_size) | (periods >= embed.phys_emb.period_size)
            if bool(bad.any()):
                raise GraphError(
                    f"elements {sorted(set(z[bad].tolist()))} have no group in FAENet's period/group embedding "
                    "(f-block); use pg_hidden_channels=0"
                )

    def forward_frame(self, graph: Data) -> dict[str, Tensor]:
        """The bare network on ``graph`` as given (no frame averaging): ``{"energy": [B], "forces": [N, 3]}``."""
        batch, batch_size = node_graph_index(graph), num_graphs(graph)
        frame = getattr(graph, "frame", None)
        norm_group = torch.zeros_like(batch) if frame is None else frame
        num_norm_groups = int(norm_group.max()) + 1 if norm_group.numel() else 1
        rel_pos, distance = edge_vectors(graph)  # [E, 3], [E]
        h, e = self.embed_block(
            graph.z, rel_pos, self.distance_expansion(distance), graph.tags if self.use_tags else None
        )
        alpha = self.w_lin(h) if self.energy_head == "weighted-av-initial-embeds" else None
        skips: list[Tensor] = []
        for interaction in self.interaction_blocks:
            if self.skip_co == "concat_atom":
                skips.append(h)
            elif self.skip_co:
                skips.append(self.output_block(h, batch, batch_size, alpha))
            h = h + interaction(h, graph.edge_index, e, norm_group, num_norm_groups)
        if self.skip_co == "concat_atom":
            h = self.act(self.mlp_skip_co(torch.cat([*skips, h], dim=1)))
        energy = self.output_block(h, batch, batch_size, alpha)  # [B, 1]
        if self.skip_co == "concat":
            energy = self.mlp_skip_co(torch.cat([*skips, energy], dim=1))
        elif self.skip_co == "add":
            energy = sum(skips, energy)
        out = {"energy": energy.view(-1)}
        if self.regress_forces:
            out["forces"] = self.decoder(h)
        return out

    def forward(self, graph: Data, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Frame-averaged outputs (the bare network with ``frames=None``); ``generator`` seeds random frames."""
        self._check_inputs(graph)
        if self.frames is None:
            return self.forward_frame(graph)
        return frame_average(self.forward_frame, graph, frames=self.frames, group=self.group, generator=generator)


# -------------------------------------------------------------------------------------------------- variants
_VARIANTS: dict[str, dict[str, Any]] = {
    "faenet": {},
    "faenet-is2re": {
        "frames": "stochastic",
        "group": "SE2",
        "hidden_channels": 384,
        "num_filters": 480,
        "num_interactions": 5,
        "num_gaussians": 104,
        "cutoff": 6.0,
        "regress_forces": None,
        "tag_hidden_channels": 64,
        "pg_hidden_channels": 64,
        "phys_embeds": True,
        "phys_hidden_channels": 0,
        "energy_head": "weighted-av-final-embeds",
        "skip_co": "concat",
        "second_layer_MLP": False,
        "complex_mp": True,
        "mp_type": "base",
        "graph_norm": True,
    },
    "faenet-s2ef": {
        "frames": "stochastic",
        "group": "E2",
        "hidden_channels": 256,
        "num_filters": 480,
        "num_interactions": 7,
        "num_gaussians": 136,
        "regress_forces": "direct_with_gradient_target",
        "max_num_neighbors": 30,
        "tag_hidden_channels": 32,
        "pg_hidden_channels": 64,
        "phys_embeds": False,
        "phys_hidden_channels": 0,
        "energy_head": "weighted-av-final-embeds",
        "skip_co": False,
        "second_layer_MLP": False,
        "complex_mp": True,
        "mp_type": "updownscale_base",
        "graph_norm": True,
        "force_decoder_type": "mlp",
    },
    "faenet-qm9": {
        "frames": "stochastic",
        "group": "E3",
        "cutoff": 6.0,
        "energy_head": None,
        "max_num_neighbors": 30,
        "hidden_channels": 400,
        "num_filters": 480,
        "num_gaussians": 100,
        "pg_hidden_channels": 32,
        "num_interactions": 5,
        "mp_type": "updownscale_base",
        "complex_mp": True,
        "graph_norm": True,
        "phys_embeds": False,
        "phys_hidden_channels": 0,
        "regress_forces": None,
        "second_layer_MLP": True,
        "skip_co": False,
        "tag_hidden_channels": 0,
    },
}


def _create_faenet(variant: str, **kwargs: Any) -> FAENet:
    """Build ``variant`` from its official configuration updated by ``kwargs``."""
    return FAENet(**{**_VARIANTS[variant], **kwargs})


@register_model("faenet", task="property")
def faenet(**kwargs: Any) -> FAENet:
    """FAENet (Duval et al. 2023) with the reference package's defaults, averaged over all 8 E(3) frames."""
    return _create_faenet("faenet", **kwargs)


@register_model("faenet-is2re", task="property")
def faenet_is2re(**kwargs: Any) -> FAENet:
    """FAENet for OC20 IS2RE (relaxed energy): 2D frames, one random proper frame, physics embeddings."""
    return _create_faenet("faenet-is2re", **kwargs)


@register_model("faenet-s2ef", task="potential")
def faenet_s2ef(**kwargs: Any) -> FAENet:
    """FAENet for OC20 S2EF-2M: 2D frames, one random frame, energy and direct forces (MLP decoder)."""
    return _create_faenet("faenet-s2ef", **kwargs)


@register_model("faenet-qm9", task="property")
def faenet_qm9(**kwargs: Any) -> FAENet:
    """FAENet for one QM9 property: 3D frames, one random frame, no tags, period/group embeddings."""
    return _create_faenet("faenet-qm9", **kwargs)
