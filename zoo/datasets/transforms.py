r"""Transforms: callables ``AtomsGraph -> AtomsGraph`` applied per item (``transform=``) or once when a dataset is
processed (``pre_transform=``, see :class:`~zoo.datasets.processed.ProcessedDataset`).

Each transform is a frozen dataclass, so its ``repr`` names every parameter: that string is what the
pre-transform guard compares to decide whether processed data must be recomputed. Random transforms draw from
``torch``'s global generator (seeded per DataLoader worker by PyTorch) unless given a ``generator``.

Example:
    >>> from ase.build import molecule
    >>> from zoo.graph import from_ase
    >>> transform = Compose([Center(), RadiusGraph(cutoff=2.0), ElementMapping((1, 8))])
    >>> graph = transform(from_ase(molecule("H2O")))
    >>> graph.node_type.tolist(), graph.edge_index.shape[1]
    ([1, 0, 0], 6)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from ase.data import atomic_masses, chemical_symbols
from torch import Tensor

from zoo.geometry.frames import FrameGroup, pca_frames
from zoo.graph import AtomsGraph, GraphError, radius_graph

__all__ = [
    "Center",
    "Compose",
    "DiffusionNoise",
    "ElementMapping",
    "NoisePositions",
    "PCAFrames",
    "RadiusGraph",
    "RandomRotation",
    "random_rotation",
]


def _copy(graph: AtomsGraph) -> AtomsGraph:
    """A shallow copy: new field dict, tensors shared (transforms replace tensors, never modify them)."""
    return copy.copy(graph)


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order."""

    transforms: Sequence = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        for transform in self.transforms:
            graph = transform(graph)
        return graph


@dataclass(frozen=True)
class RadiusGraph:
    """Edges within ``cutoff`` (Å) with periodic images, from :func:`zoo.graph.radius_graph` (the project's one
    neighbour list): adds ``edge_index [2, E]`` and ``edge_shift [E, 3]``. ``max_neighbors`` and
    ``strict_max_neighbors`` as in :func:`zoo.graph.neighbor_list` (a model's ``metadata`` names both)."""

    cutoff: float
    max_neighbors: int | None = None
    strict_max_neighbors: bool = True

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        return radius_graph(
            graph, self.cutoff, max_neighbors=self.max_neighbors, strict_max_neighbors=self.strict_max_neighbors
        )


@dataclass(frozen=True)
class Center:
    """Translate so the centroid (``weights="mass"``: the centre of mass) is at the origin.

    Periodic structures are translated too (the physics is unchanged); ``pos_offset [1, 3]`` records the shift
    that was subtracted, in Å.
    """

    weights: str | None = None

    def __post_init__(self) -> None:
        if self.weights not in (None, "mass"):
            raise ValueError(f"weights must be None or 'mass', got {self.weights!r}")

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        pos = graph.pos
        if self.weights == "mass":
            if "z" not in graph:
                raise GraphError("Center(weights='mass') needs atomic numbers z")
            weight = torch.as_tensor(atomic_masses, dtype=pos.dtype, device=pos.device)[graph.z]
        else:
            weight = torch.ones(pos.shape[0], dtype=pos.dtype, device=pos.device)
        centre = (weight[:, None] * pos).sum(0, keepdim=True) / weight.sum()  # [1, 3]
        out = _copy(graph)
        out.pos = pos - centre
        out.pos_offset = centre
        return out


def random_rotation(dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None) -> Tensor:
    """A rotation matrix ``[3, 3]`` drawn uniformly from SO(3) (QR of a Gaussian matrix, signs fixed)."""
    gaussian = torch.randn(3, 3, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


@dataclass(frozen=True)
class RandomRotation:
    """Rotate positions, cell, forces, velocities and stress by a uniform random rotation :math:`R`.

    :math:`x \\mapsto x R^T` for positions, forces, velocities and the rows of the cell; :math:`\\sigma \\mapsto
    R \\sigma R^T` for stress. Edges (``edge_shift``) stay valid because the cell rotates with the atoms. The
    rotation is stored as ``rotation [1, 3, 3]``.
    """

    seed: int | None = None

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        rotation = random_rotation(graph.pos.dtype, generator).to(graph.pos.device)
        out = _copy(graph)
        for name in ("pos", "forces", "vel", "cell"):
            if name in graph:
                out[name] = graph[name] @ rotation.T
        if "stress" in graph:
            out.stress = rotation @ graph.stress @ rotation.T
        out.rotation = rotation[None]
        return out


@dataclass(frozen=True)
class PCAFrames:
    """Add PCA frames for frame averaging (:func:`zoo.geometry.frames.pca_frames`): ``frames [1, F, 3, 3]``
    (rows = signed principal axes) and ``frame_centroid [1, 3]`` in Å."""

    group: FrameGroup = "E3"

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        frames, centroid = pca_frames(graph.pos, group=self.group)
        out = _copy(graph)
        out.frames = frames
        out.frame_centroid = centroid
        return out


@dataclass(frozen=True)
class ElementMapping:
    """Map atomic numbers to model type indices: ``node_type [N]`` = position of ``z`` in ``elements``.

    Raises:
        GraphError: an atom whose element is not in ``elements`` (named, with the list).
    """

    elements: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(int(z) for z in self.elements))
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements must be distinct, got {self.elements}")

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        table = torch.full((119,), -1, dtype=torch.long)
        table[list(self.elements)] = torch.arange(len(self.elements))
        node_type = table.to(graph.z.device)[graph.z]
        if bool((node_type < 0).any()):
            unknown = sorted(set(graph.z[node_type < 0].tolist()))
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.elements)
            raise GraphError(f"elements {names} are not in the element mapping ({known})")
        out = _copy(graph)
        out.node_type = node_type
        return out


def _centred_noise(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    noise = torch.randn(*shape, dtype=like.dtype, generator=generator).to(like.device)
    return noise - noise.mean(dim=0, keepdim=True)


@dataclass(frozen=True)
class NoisePositions:
    """Gaussian noise on positions (denoising pre-training): ``pos += sigma * noise``.

    Stores ``pos_clean [N, 3]`` and ``noise [N, 3]`` (unit variance; zero mean over atoms if ``centred``, so the
    centre of geometry does not move), ``sigma`` in Å.
    """

    sigma: float
    centred: bool = False
    seed: int | None = None

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        pos = graph.pos
        if self.centred:
            noise = _centred_noise(pos.shape, pos, generator)
        else:
            noise = torch.randn(pos.shape, dtype=pos.dtype, generator=generator).to(pos.device)
        out = _copy(graph)
        out.pos_clean = pos
        out.noise = noise
        out.pos = pos + self.sigma * noise
        return out


@dataclass(frozen=True)
class DiffusionNoise:
    r"""One forward-diffusion step at a random time, as in EDM (Hoogeboom et al., 2022):
    :math:`t \sim U\{0..T\}`, :math:`z_t = \alpha_t x + \sigma_t \epsilon` with centred Gaussian :math:`\epsilon`
    (zero centre of geometry: the molecule is translation-free) and the polynomial schedule
    :math:`\alpha_t = (1 - 2s)(1 - (t/T)^{p}) + s`, :math:`\sigma_t = \sqrt{1 - \alpha_t^2}`.

    Stores ``pos_clean [N, 3]`` (centred), ``noise [N, 3]``, ``t [1]`` (long), ``alpha [1]``, ``sigma [1]``;
    ``pos`` becomes :math:`z_t`.
    """

    timesteps: int = 1000
    power: float = 2.0
    precision: float = 1e-5
    seed: int | None = None

    def __call__(self, graph: AtomsGraph) -> AtomsGraph:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        step = int(torch.randint(0, self.timesteps + 1, (1,), generator=generator))
        alpha = (1 - 2 * self.precision) * (1 - (step / self.timesteps) ** self.power) + self.precision
        sigma = math.sqrt(max(1.0 - alpha**2, 0.0))
        pos = graph.pos - graph.pos.mean(dim=0, keepdim=True)
        noise = _centred_noise(pos.shape, pos, generator)
        out = _copy(graph)
        out.pos_clean = pos
        out.noise = noise
        out.pos = alpha * pos + sigma * noise
        out.t = torch.tensor([step], dtype=torch.long, device=pos.device)
        out.alpha = torch.tensor([alpha], dtype=pos.dtype, device=pos.device)
        out.sigma = torch.tensor([sigma], dtype=pos.dtype, device=pos.device)
        return out
