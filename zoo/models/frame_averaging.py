r"""Frame averaging: exact E(3)/SE(3) (or, on surfaces, E(2)/SE(2)) symmetry for any backbone.

Frame averaging (Puny et al., ICLR 2022; the PCA frames and the stochastic variant of FAENet, Duval et al.,
ICML 2023) makes a network :math:`\Phi` that knows nothing of symmetry invariant or equivariant by running it
on the structure expressed in each of a small set of canonical frames and averaging what comes back:

.. math::

    \langle \Phi \rangle(X) = \frac{1}{|\mathcal F(X)|} \sum_{F \in \mathcal F(X)}
        \rho_{\mathrm{out}}(F)^{-1}\, \Phi\big((X - c)\, F^\top\big),

where :math:`c` is the centroid and :math:`\mathcal F(X)` the PCA frames of :func:`zoo.geometry.pca_frames`
(rows = signed principal axes). Under :math:`X \mapsto X Q^\top + t` the set of frames becomes
:math:`\{F Q^\top\}`, the set of canonical structures :math:`(X - c) F^\top` is unchanged, and the
representations :math:`\rho_{\mathrm{out}}` undo the frame on the outputs:

========================  ==========================================================================
``"scalar"``              averaged as they are (energy, per-atom energies, charges, ...)
``"vector"``              :math:`y' F` (forces, velocities, dipoles), then averaged
``"pseudovector"``        :math:`\det(F)\, y' F`
``"position"``            :math:`y' F + c` (predicted coordinates)
``"tensor2"``             :math:`F^\top S' F` (stress, virial)
========================  ==========================================================================

Batching: the :math:`K` selected frames of each of the :math:`B` graphs are stacked into one graph batch of
:math:`K \cdot B` structures (copy :math:`k` of every graph first, then copy :math:`k + 1`), so the backbone
runs once, not once per frame. Positions are replaced by the canonical coordinates, vector-valued inputs
(``vel``, ``forces``) and the cell rows are rotated by the frame, edges (``edge_index``, ``edge_shift`` and
any other ``edge_*`` field) and every other per-atom or per-graph field are copied. Integer cell offsets are
frame independent, so periodic edge vectors :math:`r_j - r_i + S C` rotate exactly with the positions
(cell-aware frames). Each stacked atom carries ``frame [K N]``, the copy it belongs to, for backbones that
pool statistics over a whole batch (FAENet's GraphNorm pools per copy).

Frame selection (argument ``frames``): ``"all"`` (exact symmetry), ``"det"`` (the first frame of
:func:`~zoo.geometry.pca_frames`' order, FAENet's ``fa_method="det"`` for ``"E3"``/``"E2"``: one forward pass,
but the signs of the axes follow a convention that is not equivariant, so the outputs are not exactly
symmetric) or ``"stochastic"`` (one frame per graph drawn uniformly at every call: equivariant in
expectation, :math:`\mathbb E_F[\cdot]` equals the ``"all"`` average).

Groups (argument ``group``): ``"E3"`` (8 frames), ``"SE3"`` (4 proper rotations: not reflection-equivariant),
``"E2"`` (4 frames in the :math:`xy` plane, :math:`z` kept: FAENet's ``frame_averaging="2D"``, for slabs whose
surface normal is :math:`z`) and ``"SE2"`` (2). ``"2D"`` is accepted as another name of ``"E2"``; FAENet's
``fa_method="se3-*"`` with ``"2D"`` is ``"SE2"``.

Degenerate geometry: when two principal variances (nearly) coincide (a symmetric top, a linear molecule, a
single atom) the axes in that eigenspace are not fixed by the geometry and the average is only approximately
symmetric; :func:`~zoo.geometry.pca_frames` then issues a :class:`~zoo.geometry.frames.DegenerateFramesWarning`
naming the graphs (``warnings.simplefilter("error", DegenerateFramesWarning)`` turns it into an error).

Forces computed *inside* the backbone by autograd are gradients with respect to the canonical coordinates,
rotated back: an equivariant vector, but not the gradient of the averaged energy through the frames.

Example:
    >>> import torch
    >>> from zoo.testing import molecule_graph
    >>> class CoordinateMLP(torch.nn.Module):  # not equivariant at all
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    ...     def forward(self, graph):
    ...         out = self.mlp(graph.pos)
    ...         energy = torch.zeros(graph.cell.shape[0], dtype=out.dtype).index_add(0, graph.batch, out[:, 0])
    ...         return {"energy": energy, "forces": out[:, 1:]}
    >>> model = FrameAveraged(CoordinateMLP(), frames="all", group="E3").double()
    >>> model(molecule_graph(6))["forces"].shape
    torch.Size([6, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from zoo.geometry.frames import DEFAULT_OUTPUT_TYPES, OutputType, pca_frames
from zoo.graph import AtomsGraph, GraphError, node_graph_index, num_graphs

__all__ = ["FrameAveraged", "OutputType", "frame_average", "resolve_group", "stack_frames"]

FrameMode = Literal["all", "stochastic", "det"]
FRAME_MODES = ("all", "stochastic", "det")
GROUP_ALIASES = {"E3": "E3", "SE3": "SE3", "E2": "E2", "SE2": "SE2", "2D": "E2"}
DEFAULT_INPUT_VECTORS = ("vel", "forces")
# Per-graph fields of an AtomsGraph batch (first dimension B); every other tensor with first dimension N is per atom.
_GRAPH_FIELDS = ("cell", "pbc", "natoms", "charge", "spin", "energy", "stress")


def resolve_group(group: str) -> str:
    """The :func:`zoo.geometry.pca_frames` group of ``group`` (``"2D"`` is ``"E2"``); unknown names raise."""
    if group not in GROUP_ALIASES:
        raise ValueError(f"group must be one of {list(GROUP_ALIASES)}, got {group!r}")
    return GROUP_ALIASES[group]


def _select_frames(frames: Tensor, mode: str, generator: torch.Generator | None) -> Tensor:
    """``[B, F, 3, 3]`` -> ``[B, K, 3, 3]``: all frames, the first, or one drawn uniformly per graph."""
    if mode == "all":
        return frames
    if mode == "det":
        return frames[:, :1]
    index = torch.randint(frames.shape[1], (frames.shape[0],), generator=generator, device=generator.device)
    return frames[torch.arange(frames.shape[0], device=frames.device), index.to(frames.device)][:, None]


def stack_frames(
    graph: Data, frames: Tensor, centroid: Tensor, *, input_vectors: Sequence[str] = DEFAULT_INPUT_VECTORS
) -> AtomsGraph:
    r"""One batch of :math:`K \cdot B` graphs: every graph of ``graph`` expressed in each of its ``K`` frames.

    Copy :math:`k` of graph :math:`b` is structure :math:`k B + b`, with positions :math:`(x_i - c_b) F_{bk}^\top`,
    vector inputs :math:`v_i F_{bk}^\top`, cell rows :math:`C_b F_{bk}^\top`, the same edges and the same other
    fields. Adds ``frame [K N]`` (the copy :math:`k` of each atom).

    Args:
        graph: an :class:`~zoo.graph.AtomsGraph` or a batch of them (needs ``pos`` and ``cell``).
        frames: ``[B, K, 3, 3]``, rows = axes.
        centroid: ``[B, 3]``.
        input_vectors: per-atom vector fields to rotate.

    Returns:
        The stacked :class:`~zoo.graph.AtomsGraph`, with ``batch [K N]``.
    """
    num_atoms, batch_size, num_frames = graph.pos.shape[0], num_graphs(graph), frames.shape[1]
    batch = node_graph_index(graph)
    node_frames = frames[batch].transpose(0, 1)  # [K, N, 3, 3]
    centred = graph.pos - centroid[batch]  # [N, 3]
    fields: dict[str, object] = {
        "pos": torch.einsum("knij,nj->kni", node_frames, centred).reshape(-1, 3),
        "batch": (batch[None, :] + batch_size * torch.arange(num_frames, device=batch.device)[:, None]).reshape(-1),
        "frame": torch.arange(num_frames, device=batch.device).repeat_interleave(num_atoms),
    }
    for key, value in graph.items():
        if key in fields or key == "ptr":
            continue
        if not torch.is_tensor(value) or value.dim() == 0:
            fields[key] = value
        elif key == "edge_index":
            offset = num_atoms * torch.arange(num_frames, device=value.device)
            fields[key] = (value[None, :, :] + offset[:, None, None]).transpose(0, 1).reshape(2, -1)
        elif key.startswith("edge_"):
            fields[key] = value.repeat(num_frames, *([1] * (value.dim() - 1)))
        elif key == "cell":
            fields[key] = torch.einsum("bcj,bkij->kbci", value, frames).reshape(-1, 3, 3)
        elif key in input_vectors and value.shape[0] == num_atoms:
            fields[key] = torch.einsum("knij,nj->kni", node_frames, value).reshape(-1, 3)
        elif (key in _GRAPH_FIELDS and value.shape[0] == batch_size) or value.shape[0] == num_atoms:
            fields[key] = value.repeat(num_frames, *([1] * (value.dim() - 1)))
        else:
            raise GraphError(
                f"frame averaging cannot tell whether graph.{key} (shape {tuple(value.shape)}) is per atom "
                f"({num_atoms}) or per graph ({batch_size})"
            )
    return AtomsGraph(**fields)


def _unframe(value: Tensor, kind: OutputType, frames: Tensor, centroid: Tensor) -> Tensor:
    """Undo the frames on one stacked output ``[K, X, ...]`` (``frames [K, X, 3, 3]``, ``centroid [X, 3]``)."""
    if kind == "scalar":
        return value
    if kind in ("vector", "pseudovector", "position"):
        out = torch.einsum("kxi,kxij->kxj", value, frames)  # y' F
        if kind == "pseudovector":
            out = out * torch.linalg.det(frames)[..., None]
        return out + centroid if kind == "position" else out
    if kind == "tensor2":
        return frames.transpose(-1, -2) @ value @ frames  # F^T S' F
    raise ValueError(f"unknown output type {kind!r}; use one of scalar, vector, pseudovector, position, tensor2")


def frame_average(
    forward: Callable[[AtomsGraph], Mapping[str, Tensor]],
    graph: Data,
    *,
    frames: FrameMode = "all",
    group: str = "E3",
    output_types: Mapping[str, OutputType] | None = None,
    input_vectors: Sequence[str] = DEFAULT_INPUT_VECTORS,
    generator: torch.Generator | None = None,
    degeneracy_rtol: float = 1e-4,
) -> dict[str, Tensor]:
    r"""Run ``forward`` once on all selected frames of all graphs of ``graph`` and average its outputs.

    Args:
        forward: the backbone: graph -> dict of tensors, each per graph (first dimension :math:`K B`) or per atom
            (:math:`K N`) of the stacked graph.
        graph: an :class:`~zoo.graph.AtomsGraph` or a batch (``pos``, ``cell``).
        frames: ``"all"``, ``"det"`` or ``"stochastic"`` (module docstring).
        group: ``"E3"``, ``"SE3"``, ``"E2"`` (also ``"2D"``) or ``"SE2"``.
        output_types: type of each output (defaults by name: ``energy`` scalar, ``forces`` vector, ``pos``
            position, ``stress`` tensor2, ...). Outputs of unknown type raise.
        input_vectors: per-atom vector fields of the graph rotated into each frame.
        generator: random source of ``"stochastic"`` (``None``: torch's default generator).
        degeneracy_rtol: passed to :func:`~zoo.geometry.pca_frames`.

    Returns:
        The averaged outputs, per graph ``[B, ...]`` or per atom ``[N, ...]``.
    """
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {list(FRAME_MODES)}, got {frames!r}")
    if getattr(graph, "pos", None) is None or getattr(graph, "cell", None) is None:
        raise GraphError("frame averaging reads graph.pos and graph.cell; build the graph with AtomsGraph.build")
    batch, batch_size, num_atoms = node_graph_index(graph), num_graphs(graph), graph.pos.shape[0]
    all_frames, centroid = pca_frames(
        graph.pos, batch, group=resolve_group(group), num_graphs=batch_size, degeneracy_rtol=degeneracy_rtol
    )
    if frames == "stochastic" and generator is None:
        generator = torch.default_generator
    chosen = _select_frames(all_frames, frames, generator)  # [B, K, 3, 3]
    num_frames = chosen.shape[1]
    outputs = forward(stack_frames(graph, chosen, centroid, input_vectors=input_vectors))
    types = {**DEFAULT_OUTPUT_TYPES, **(output_types or {})}
    averaged: dict[str, Tensor] = {}
    for key, value in outputs.items():
        if key not in types:
            raise ValueError(
                f"output {key!r} of the backbone has no known transformation: pass output_types={{{key!r}: "
                "'scalar' | 'vector' | 'pseudovector' | 'position' | 'tensor2'}"
            )
        if value.shape[0] == num_frames * num_atoms:
            per_item, item_centroid = chosen[batch].transpose(0, 1), centroid[batch]  # [K, N, 3, 3], [N, 3]
        elif value.shape[0] == num_frames * batch_size:
            per_item, item_centroid = chosen.transpose(0, 1), centroid  # [K, B, 3, 3], [B, 3]
        else:
            raise ValueError(
                f"output {key!r} has first dimension {value.shape[0]}, neither frames x atoms "
                f"({num_frames} x {num_atoms}) nor frames x graphs ({num_frames} x {batch_size})"
            )
        stacked = value.reshape(num_frames, -1, *value.shape[1:])
        averaged[key] = _unframe(stacked, types[key], per_item.to(value.dtype), item_centroid.to(value.dtype)).mean(0)
    return averaged


class FrameAveraged(nn.Module):
    r"""Wrap a backbone (any module ``graph -> dict of tensors``) in frame averaging.

    .. math:: \langle \Phi \rangle(X) = \frac{1}{K} \sum_{k=1}^{K} \rho_{\mathrm{out}}(F_k)^{-1}\,
        \Phi\big((X - c) F_k^\top\big)

    over the :math:`K` selected PCA frames (all, the first, or one random frame per graph); see the module
    docstring for the groups, the output types and the batching. The backbone is ``self.backbone``, so its
    weights load under the prefix ``backbone.``.

    Args:
        backbone: the wrapped network.
        frames: ``"all"`` (exact), ``"stochastic"`` (in expectation) or ``"det"``.
        group: ``"E3"``, ``"SE3"``, ``"E2"`` / ``"2D"`` or ``"SE2"``.
        output_types: type of each backbone output not in the defaults (e.g. ``{"node_features": "scalar"}``).
        input_vectors: per-atom vector inputs rotated into each frame (default ``vel``, ``forces``).
        degeneracy_rtol: relative eigenvalue gap below which a degenerate-frames warning is issued.

    Shapes:
        whatever the backbone reads -> the backbone's outputs, per graph ``[B, ...]`` or per atom ``[N, ...]``.

    Example:
        >>> import torch, zoo
        >>> from zoo.testing import molecule_graph
        >>> model = FrameAveraged(zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1), group="SE3")
        >>> sorted(model.double()(molecule_graph(5)))
        ['energies', 'energy', 'forces']
    """

    def __init__(
        self,
        backbone: nn.Module,
        frames: FrameMode = "all",
        group: str = "E3",
        *,
        output_types: Mapping[str, OutputType] | None = None,
        input_vectors: Sequence[str] = DEFAULT_INPUT_VECTORS,
        degeneracy_rtol: float = 1e-4,
    ) -> None:
        super().__init__()
        if frames not in FRAME_MODES:
            raise ValueError(f"frames must be one of {list(FRAME_MODES)}, got {frames!r}")
        self.backbone = backbone
        self.frames = frames
        self.group = resolve_group(group)
        self.output_types = dict(output_types or {})
        self.input_vectors = tuple(input_vectors)
        self.degeneracy_rtol = degeneracy_rtol
        self.metadata = {
            **getattr(backbone, "metadata", {}),
            "frame_averaging": {"frames": frames, "group": self.group},
        }

    def forward(self, graph: Data, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The frame-averaged outputs of the backbone; ``generator`` seeds ``"stochastic"`` frames."""
        return frame_average(
            self.backbone,
            graph,
            frames=self.frames,
            group=self.group,
            output_types=self.output_types,
            input_vectors=self.input_vectors,
            generator=generator,
            degeneracy_rtol=self.degeneracy_rtol,
        )
