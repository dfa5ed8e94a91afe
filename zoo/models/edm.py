r"""EDM: equivariant diffusion for molecule generation in 3D (Hoogeboom, Satorras, Vignac and Welling, ICML 2022).

A molecule of :math:`M` atoms is a point :math:`z = (x, h)` with positions :math:`x \in \mathbb{R}^{M \times 3}`
restricted to the zero centre-of-mass subspace and atom features :math:`h` (a one-hot atom type, scaled by
:math:`1/4`, and optionally the atomic number as an "integer charge", scaled by :math:`1/10`). The forward
process is the variance-preserving diffusion (paper, eqs. 1-5)

.. math::

    q(z_t \mid x, h) = \mathcal{N}(z_t \mid \alpha_t [x, h], \sigma_t^2 I), \qquad
    \alpha_t^2 = \mathrm{sigmoid}(-\gamma_t), \quad \sigma_t^2 = \mathrm{sigmoid}(\gamma_t),

with :math:`\gamma` a predefined table (``polynomial_<p>``, ``cosine``) or the learned monotone
:class:`GammaNetwork`. An EGNN with the EDM block structure (:class:`EDMDynamics`) predicts the noise
:math:`\hat\epsilon = \phi(z_t, t)`; its position part is an equivariant vector with zero mean, its feature
part is invariant. Ancestral sampling draws :math:`z_s \sim p(z_s \mid z_t)` for :math:`t = T..1`, then
:math:`x \sim p(x \mid z_0)`; atom types are the argmax of the feature part of :math:`z_0` and charges its
rounding (as the official code does, not the denoised prediction).

The arithmetic follows the official code (``ehoogeboom/e3_diffusion_for_molecules``: ``egnn/egnn_new.py``,
``egnn/models.py``, ``equivariant_diffusion/en_diffusion.py``) term for term, with its parameter names, so its
``generative_model_ema.npy`` state dicts load with ``strict=True`` (see :mod:`zoo.converters.edm`). The
official code pads molecules to a common size and masks padded atoms and self-pairs; the denoiser here runs on
the complete graph of each molecule without padding, which gives the same numbers. The diffusion itself works
on padded ``[B, M_max, D]`` tensors with a node mask, because the official training loss divides by the padded
atom count.

Registered architectures: ``edm`` (generic), ``edm-qm9`` (9 blocks of 256 features, QM9 with hydrogens),
``edm-qm9-conditional`` (192 features, one context property, no charges).

Example:
    >>> import torch, zoo
    >>> model = zoo.create_model("edm-qm9", hidden_nf=16, n_layers=2, timesteps=10).double()
    >>> [len(atoms) for atoms in model.sample(2, n_atoms=5, seed=0)]
    [5, 5]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import ase
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.data import Data

from zoo.graph import GraphError, node_graph_index, num_graphs
from zoo.models.egnn import check_choice, complete_edge_index, require_fields, scatter_sum
from zoo.registry import register_model

logger = logging.getLogger(__name__)

__all__ = [
    "EDM",
    "EDMGCL",
    "EDMDynamics",
    "EDMEquivariantBlock",
    "EquivariantUpdate",
    "GammaNetwork",
    "PredefinedNoiseSchedule",
    "cosine_alphas2",
    "polynomial_alphas2",
]

NoiseSchedule = str  # "learned", "cosine" or "polynomial_<power>"
LossType = Literal["l2", "vlb"]
NoiseSource = Callable[[tuple[int, ...]], Tensor]

QM9_SPECIES = (1, 6, 7, 8, 9)
# Atoms per molecule in QM9 with hydrogens (official configs/datasets_config.py), the default of every variant; the
# converter sets the histogram of the checkpoint's own training split.
QM9_N_NODES = {
    22: 3393, 17: 13025, 23: 4848, 21: 9970, 19: 13832, 20: 9482, 16: 10644, 13: 3060, 15: 7796, 25: 1506,
    18: 13364, 12: 1689, 11: 807, 24: 539, 14: 5136, 26: 48, 7: 16, 10: 362, 8: 49, 9: 124, 27: 266, 4: 4,
    29: 25, 6: 9, 5: 5, 3: 1,
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ schedules
def _clip_alpha_steps(alphas2: np.ndarray, clip_value: float = 0.001) -> np.ndarray:
    r"""Clip :math:`\alpha_t^2 / \alpha_{t-1}^2` to :math:`[c, 1]` and re-accumulate (stabilises sampling)."""
    steps = np.concatenate([np.ones(1), alphas2])
    return np.cumprod(np.clip(steps[1:] / steps[:-1], clip_value, 1.0))


def polynomial_alphas2(timesteps: int, precision: float = 1e-4, power: float = 2.0) -> np.ndarray:
    r""":math:`\alpha_t^2 = (1 - 2s)\, f(t) + s` with :math:`f(t) = (1 - (t/(T+1))^p)^2`, steps clipped.

    Returns:
        ``[T + 1]`` float64 values of :math:`\alpha^2` at :math:`t = 0..T`.
    """
    steps = timesteps + 1
    grid = np.linspace(0, steps, steps)
    alphas2 = _clip_alpha_steps((1 - np.power(grid / steps, power)) ** 2)
    return (1 - 2 * precision) * alphas2 + precision


def cosine_alphas2(timesteps: int, s: float = 0.008) -> np.ndarray:
    r"""The cosine schedule of Nichol and Dhariwal (2021): :math:`\bar\alpha_t` from clipped
    :math:`\beta_t \le 0.999`. Returns ``[T + 1]`` float64 values."""
    steps = timesteps + 2
    grid = np.linspace(0, steps, steps)
    cumprod = np.cos(((grid / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    cumprod = cumprod / cumprod[0]
    betas = np.clip(1 - cumprod[1:] / cumprod[:-1], 0, 0.999)
    return np.cumprod(1.0 - betas)


class PredefinedNoiseSchedule(nn.Module):
    r"""Lookup table :math:`\gamma_t = -\log(\alpha_t^2 / \sigma_t^2)` at :math:`t \in \{0, 1/T, .., 1\}`.

    The table is a float32 parameter without gradient (``gamma``), as in the official checkpoints; a float64
    model uses the float32-rounded values, which is what matching the official outputs needs.
    """

    def __init__(self, noise_schedule: str, timesteps: int, precision: float) -> None:
        super().__init__()
        self.timesteps = timesteps
        if noise_schedule == "cosine":
            alphas2 = cosine_alphas2(timesteps)
        elif noise_schedule.startswith("polynomial_"):
            alphas2 = polynomial_alphas2(timesteps, precision, float(noise_schedule.split("_", 1)[1]))
        else:
            raise ValueError(
                f"noise_schedule must be 'learned', 'cosine' or 'polynomial_<power>', got {noise_schedule!r}"
            )
        gamma = -(np.log(alphas2) - np.log(1 - alphas2))
        self.gamma = nn.Parameter(torch.from_numpy(gamma).float(), requires_grad=False)

    def forward(self, t: Tensor) -> Tensor:
        """:math:`\\gamma` at times ``t`` (any shape, values in [0, 1]), same shape."""
        return self.gamma[torch.round(t * self.timesteps).long()]


class PositiveLinear(nn.Module):
    """Linear layer with weights :math:`\\mathrm{softplus}(W)` (positive), initialised with an offset of -2."""

    def __init__(self, in_features: int, out_features: int, weight_init_offset: float = -2.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        with torch.no_grad():
            self.weight.add_(weight_init_offset)
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in] -> [..., out]``."""
        return F.linear(x, F.softplus(self.weight), self.bias)


class GammaNetwork(nn.Module):
    r"""Learned monotone schedule (VDM): :math:`\tilde\gamma(t) = l_1(t) + l_3(\sigma(l_2(l_1(t))))` with
    positive weights, rescaled so :math:`\gamma(0) = \gamma_0` and :math:`\gamma(1) = \gamma_1` (learned)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = PositiveLinear(1, 1)
        self.l2 = PositiveLinear(1, 1024)
        self.l3 = PositiveLinear(1024, 1)
        self.gamma_0 = nn.Parameter(torch.tensor([-5.0]))
        self.gamma_1 = nn.Parameter(torch.tensor([10.0]))

    def gamma_tilde(self, t: Tensor) -> Tensor:
        """The unnormalised monotone function, ``[..., 1]``."""
        l1_t = self.l1(t)
        return l1_t + self.l3(torch.sigmoid(self.l2(l1_t)))

    def forward(self, t: Tensor) -> Tensor:
        """:math:`\\gamma` at ``t [..., 1]``, same shape."""
        tilde_0, tilde_1 = self.gamma_tilde(torch.zeros_like(t)), self.gamma_tilde(torch.ones_like(t))
        normalized = (self.gamma_tilde(t) - tilde_0) / (tilde_1 - tilde_0)
        return self.gamma_0 + (self.gamma_1 - self.gamma_0) * normalized


# --------------------------------------------------------------------------------------------------- blocks
class SinusoidsEmbedding(nn.Module):
    r"""Distance features :math:`(\sin(\omega_k d), \cos(\omega_k d))` of :math:`d = \sqrt{r^2 + 10^{-8}}`,
    :math:`\omega_k = 2\pi\, 4^k / 15`, :math:`k = 0..5` (no parameters, nothing in the state dict)."""

    def __init__(self, max_res: float = 15.0, min_res: float = 15.0 / 2000.0, div_factor: int = 4) -> None:
        super().__init__()
        n_frequencies = int(math.log(max_res / min_res, div_factor)) + 1
        self.frequencies = [2 * math.pi * div_factor**k / max_res for k in range(n_frequencies)]
        self.dim = 2 * n_frequencies

    def forward(self, radial: Tensor) -> Tensor:
        """``[E, 1]`` squared distances -> ``[E, dim]``."""
        emb = torch.sqrt(radial + 1e-8) * radial.new_tensor(self.frequencies)[None, :]
        return torch.cat([emb.sin(), emb.cos()], dim=-1)


def aggregate(values: Tensor, target: Tensor, num_nodes: int, normalization_factor: float) -> Tensor:
    r""":math:`\frac{1}{Z} \sum_{j} v_{ij}` at each target ``[num_nodes, F]`` (official ``aggregation='sum'``)."""
    return scatter_sum(values, target, num_nodes) / normalization_factor


class EDMGCL(nn.Module):
    r"""Invariant sublayer (official ``egnn_new.GCL``), residual:

    .. math:: m_{ij} = \phi_e(h_i, h_j, a_{ij})\, [\sigma(w^\top \phi_e)], \qquad
        h_i \leftarrow h_i + \phi_h\big(h_i, \tfrac{1}{Z} \textstyle\sum_j m_{ij}\big)
    """

    def __init__(self, hidden_nf: int, edges_in_d: int, normalization_factor: float, attention: bool) -> None:
        super().__init__()
        self.normalization_factor = normalization_factor
        self.attention = attention
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edges_in_d, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf), nn.SiLU()
        )
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf))
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(hidden_nf, 1), nn.Sigmoid())

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``h [N, hidden]``, ``edge_index [2, E]`` (source, target), ``edge_attr [E, edges_in_d]`` -> ``h``."""
        source, target = edge_index
        message = self.edge_mlp(torch.cat([h[target], h[source], edge_attr], dim=1))  # [E, hidden]
        if self.attention:
            message = message * self.att_mlp(message)
        aggregated = aggregate(message, target, h.shape[0], self.normalization_factor)
        return h + self.node_mlp(torch.cat([h, aggregated], dim=1))


class EquivariantUpdate(nn.Module):
    r"""Coordinate update (official ``EquivariantUpdate``):

    .. math:: x_i \leftarrow x_i + \frac{1}{Z} \sum_j \frac{x_i - x_j}{\lVert x_i - x_j\rVert + c}\,
        r\,\tanh\big(\phi_x(h_i, h_j, a_{ij})\big)

    (without ``tanh``: :math:`\phi_x` alone). The last layer of :math:`\phi_x` has no bias and starts tiny
    (``xavier_uniform_(gain=0.001)``).
    """

    def __init__(
        self, hidden_nf: int, edges_in_d: int, normalization_factor: float, tanh: bool, coords_range: float
    ) -> None:
        super().__init__()
        self.tanh = tanh
        self.coords_range = coords_range
        self.normalization_factor = normalization_factor
        last = nn.Linear(hidden_nf, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edges_in_d, hidden_nf),
            nn.SiLU(),
            nn.Linear(hidden_nf, hidden_nf),
            nn.SiLU(),
            last,
        )

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor, coord_diff: Tensor, edge_attr: Tensor) -> Tensor:
        """``x [N, 3]`` updated from ``h [N, hidden]`` and the normalised differences ``coord_diff [E, 3]``."""
        source, target = edge_index
        scale = self.coord_mlp(torch.cat([h[target], h[source], edge_attr], dim=1))  # [E, 1]
        if self.tanh:
            scale = torch.tanh(scale) * self.coords_range
        return x + aggregate(coord_diff * scale, target, x.shape[0], self.normalization_factor)


def coord_differences(x: Tensor, edge_index: Tensor, norm_constant: float) -> tuple[Tensor, Tensor]:
    r"""``(radial [E, 1], diff [E, 3])``: :math:`\lVert x_i - x_j\rVert^2` and
    :math:`(x_i - x_j) / (\sqrt{\lVert x_i - x_j\rVert^2 + 10^{-8}} + c)` for edges :math:`j \to i`."""
    source, target = edge_index
    diff = x[target] - x[source]
    radial = torch.sum(diff**2, dim=1, keepdim=True)
    return radial, diff / (torch.sqrt(radial + 1e-8) + norm_constant)


class EDMEquivariantBlock(nn.Module):
    """``inv_sublayers`` invariant :class:`EDMGCL` sublayers (``gcl_<k>``) then one :class:`EquivariantUpdate`
    (``gcl_equiv``); the edge attributes are the block's own distance features and those of the input."""

    def __init__(
        self,
        hidden_nf: int,
        edge_feat_nf: int,
        inv_sublayers: int,
        attention: bool,
        tanh: bool,
        coords_range: float,
        norm_constant: float,
        sin_embedding: SinusoidsEmbedding | None,
        normalization_factor: float,
    ) -> None:
        super().__init__()
        self.inv_sublayers = inv_sublayers
        self.norm_constant = norm_constant
        self.sin_embedding = sin_embedding
        for k in range(inv_sublayers):
            self.add_module(f"gcl_{k}", EDMGCL(hidden_nf, edge_feat_nf, normalization_factor, attention))
        self.gcl_equiv = EquivariantUpdate(hidden_nf, edge_feat_nf, normalization_factor, tanh, coords_range)

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor, input_distances: Tensor) -> tuple[Tensor, Tensor]:
        """One block: ``(h [N, hidden], x [N, 3])`` -> updated ``(h, x)``."""
        radial, coord_diff = coord_differences(x, edge_index, self.norm_constant)
        distances = self.sin_embedding(radial) if self.sin_embedding is not None else radial
        edge_attr = torch.cat([distances, input_distances], dim=1)
        for k in range(self.inv_sublayers):
            h = self._modules[f"gcl_{k}"](h, edge_index, edge_attr)
        return h, self.gcl_equiv(h, x, edge_index, coord_diff, edge_attr)


class EDMEGNN(nn.Module):
    """The EGNN of EDM (official ``egnn_new.EGNN``): ``embedding`` -> ``e_block_<b>`` -> ``embedding_out``."""

    def __init__(
        self,
        in_node_nf: int,
        hidden_nf: int,
        n_layers: int,
        inv_sublayers: int,
        attention: bool,
        tanh: bool,
        coords_range: float,
        norm_constant: float,
        sin_embedding: bool,
        normalization_factor: float,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.sin_embedding = SinusoidsEmbedding() if sin_embedding else None
        edge_feat_nf = 2 * self.sin_embedding.dim if self.sin_embedding is not None else 2
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        self.embedding_out = nn.Linear(hidden_nf, in_node_nf)
        for b in range(n_layers):
            block = EDMEquivariantBlock(
                hidden_nf,
                edge_feat_nf,
                inv_sublayers,
                attention,
                tanh,
                coords_range,
                norm_constant,
                self.sin_embedding,
                normalization_factor,
            )
            self.add_module(f"e_block_{b}", block)

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """``(h [N, in_node_nf], x [N, 3])`` -> ``(h_out [N, in_node_nf], x_out [N, 3])``."""
        radial, _ = coord_differences(x, edge_index, 1.0)
        distances = self.sin_embedding(radial) if self.sin_embedding is not None else radial
        h = self.embedding(h)
        for b in range(self.n_layers):
            h, x = self._modules[f"e_block_{b}"](h, x, edge_index, distances)
        return self.embedding_out(h), x


class EDMDynamics(nn.Module):
    r"""The noise predictor :math:`\hat\epsilon = \phi(z_t, t, c)` (official ``EGNN_dynamics_QM9``).

    Node inputs are :math:`[h_t, t, c]`; the position output is :math:`x^{L} - x_t` projected to zero mean
    per molecule (an equivariant, translation-invariant vector), the feature output the first
    ``in_node_nf`` channels of the network's node output (invariant).
    """

    def __init__(
        self,
        in_node_nf: int,
        context_node_nf: int = 0,
        hidden_nf: int = 256,
        n_layers: int = 9,
        *,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        sin_embedding: bool = False,
        normalization_factor: float = 1.0,
        condition_time: bool = True,
    ) -> None:
        super().__init__()
        self.in_node_nf = in_node_nf
        self.context_node_nf = context_node_nf
        self.condition_time = condition_time
        self.egnn = EDMEGNN(
            in_node_nf + int(condition_time) + context_node_nf,
            hidden_nf,
            n_layers,
            inv_sublayers,
            attention,
            tanh,
            coords_range,
            norm_constant,
            sin_embedding,
            normalization_factor,
        )

    def forward(
        self, x: Tensor, h: Tensor, t: Tensor, batch: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Predicted noise for one batch of molecules given as flat nodes.

        Args:
            x: ``[N, 3]`` noisy (normalised) positions :math:`z_{t,x}`.
            h: ``[N, in_node_nf]`` noisy features :math:`z_{t,h}`.
            t: ``[B]`` times in [0, 1].
            batch: ``[N]`` molecule index of each atom.
            context: ``[N, context_node_nf]`` conditioning properties (normalised), or ``None``.

        Returns:
            ``(eps_x [N, 3], eps_h [N, in_node_nf])``.
        """
        parts = [h]
        if self.condition_time:
            parts.append(t[batch, None].to(h.dtype))
        if self.context_node_nf:
            if context is None or context.shape != (h.shape[0], self.context_node_nf):
                raise ValueError(f"this model is conditional: pass context [N, {self.context_node_nf}]")
            parts.append(context)
        edge_index = complete_edge_index(batch)
        h_out, x_out = self.egnn(torch.cat(parts, dim=1), x, edge_index)
        vel = x_out - x
        if torch.isnan(vel).any():
            logger.warning("NaN in the EDM position output: reset to zero, as the official code does")
            vel = torch.zeros_like(vel)
        count = torch.bincount(batch, minlength=int(t.shape[0])).clamp(min=1).to(vel.dtype)
        mean = scatter_sum(vel, batch, int(t.shape[0])) / count[:, None]
        return vel - mean[batch], h_out[:, : self.in_node_nf]


# ---------------------------------------------------------------------------------------------- dense helpers
def _sum_except_batch(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(-1)


def remove_mean_with_mask(x: Tensor, node_mask: Tensor) -> Tensor:
    """``x [B, M, 3]`` minus its mean over the real atoms (``node_mask [B, M, 1]``), padded atoms stay zero."""
    mean = torch.sum(x, dim=1, keepdim=True) / node_mask.sum(1, keepdim=True)
    return x - mean * node_mask


def _cdf_standard_gaussian(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2)))


# ---------------------------------------------------------------------------------------------------- model
class EDM(nn.Module):
    r"""E(3) equivariant diffusion model over positions, atom types and (optionally) charges.

    State-dict layout of the official ``EnVariationalDiffusion``: ``dynamics.egnn.*``, ``gamma.*``, ``buffer``.

    Reads (``forward``, the denoiser): ``pos`` (noisy normalised positions :math:`z_{t,x}` ``[N, 3]``), ``x``
    (noisy features :math:`z_{t,h}` ``[N, in_node_nf]``), optional ``context [N, C]``; the times
    :math:`t` ``[B]`` are an argument. Returns ``{"eps_pos": [N, 3] (vector), "eps_h": [N, F] (invariant)}``.
    :meth:`loss` reads ``pos`` (Å) and ``z`` of clean molecules. :meth:`sample` returns ``ase.Atoms``.

    Args:
        species: atomic numbers of the one-hot atom types, in order (QM9: H, C, N, O, F).
        include_charges: add the atomic number as an integer feature (QM9 EDM: yes).
        context_nf: number of conditioning properties (0: unconditional).
        hidden_nf, n_layers, inv_sublayers, attention, tanh, coords_range, norm_constant, sin_embedding,
            normalization_factor, condition_time: the dynamics network (:class:`EDMDynamics`).
        timesteps: :math:`T`.
        noise_schedule: ``"polynomial_2"``, ``"cosine"`` or ``"learned"``.
        noise_precision: :math:`s` of the polynomial schedule.
        loss_type: ``"l2"`` (simplified training loss) or ``"vlb"``.
        norm_values: scales of positions, one-hot and charges (QM9: ``(1, 4, 10)``).
        n_nodes: histogram ``{atoms per molecule: count}`` of the training set, for :meth:`sample`.
        aggregation_method: only ``"sum"`` (what every released model uses).
    """

    reads = ("pos", "x")

    def __init__(
        self,
        species: Sequence[int] = QM9_SPECIES,
        include_charges: bool = True,
        context_nf: int = 0,
        hidden_nf: int = 256,
        n_layers: int = 9,
        *,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        sin_embedding: bool = False,
        normalization_factor: float = 1.0,
        aggregation_method: str = "sum",
        condition_time: bool = True,
        timesteps: int = 1000,
        noise_schedule: NoiseSchedule = "polynomial_2",
        noise_precision: float = 1e-5,
        loss_type: LossType = "l2",
        norm_values: Sequence[float] = (1.0, 4.0, 10.0),
        n_nodes: Mapping[int | str, int] | None = None,
    ) -> None:
        super().__init__()
        check_choice("aggregation_method", aggregation_method, ["sum"])
        check_choice("loss_type", loss_type, ["l2", "vlb"])
        if noise_schedule == "learned" and loss_type != "vlb":
            raise ValueError("a learned noise schedule needs loss_type='vlb'")
        species = [int(s) for s in species]
        if not species or len(set(species)) != len(species) or min(species) < 1:
            raise ValueError(f"species must be distinct atomic numbers >= 1, got {species}")
        self.species = species
        self.num_classes = len(species)
        self.include_charges = bool(include_charges)
        self.in_node_nf = self.num_classes + int(self.include_charges)
        self.context_nf = context_nf
        self.n_dims = 3
        self.T = int(timesteps)
        self.loss_type = loss_type
        self.norm_values = tuple(float(v) for v in norm_values)
        histogram = QM9_N_NODES if n_nodes is None else n_nodes
        self.n_nodes = {int(k): int(v) for k, v in histogram.items()}
        self.gamma = (
            GammaNetwork()
            if noise_schedule == "learned"
            else PredefinedNoiseSchedule(noise_schedule, self.T, noise_precision)
        )
        self.dynamics = EDMDynamics(
            self.in_node_nf,
            context_nf,
            hidden_nf,
            n_layers,
            inv_sublayers=inv_sublayers,
            attention=attention,
            tanh=tanh,
            coords_range=coords_range,
            norm_constant=norm_constant,
            sin_embedding=sin_embedding,
            normalization_factor=normalization_factor,
            condition_time=condition_time,
        )
        self.register_buffer("buffer", torch.zeros(1))
        self.metadata = {
            "task": "generative",
            "species": species,
            "units": {"pos": "A"},
            "timesteps": self.T,
            "noise_schedule": noise_schedule,
        }

    # ---------------------------------------------------------------------------------------- denoiser
    def forward(self, graph: Data, t: Tensor | float) -> dict[str, Tensor]:
        """The denoiser on a batch of noisy molecules (see the class docstring); ``t`` is ``[B]`` or a float."""
        require_fields(graph, type(self).__name__, self.reads)
        batch = node_graph_index(graph)
        t = torch.as_tensor(t, dtype=graph.pos.dtype, device=graph.pos.device).expand(num_graphs(graph))
        eps_x, eps_h = self.dynamics(graph.pos, graph.x, t, batch, getattr(graph, "context", None))
        return {"eps_pos": eps_x, "eps_h": eps_h}

    def phi(self, z: Tensor, t: Tensor, node_mask: Tensor, context: Tensor | None = None) -> Tensor:
        """The denoiser on padded tensors: ``z [B, M, 3 + F]``, ``t [B]`` or ``[B, 1]``, ``node_mask [B, M, 1]``,
        ``context [B, M, C]`` -> ``eps [B, M, 3 + F]`` (zero on padded atoms)."""
        mask = node_mask[..., 0].bool()
        batch = torch.nonzero(mask)[:, 0]
        flat = z[mask]  # [N, 3 + F]
        flat_context = context[mask] if context is not None else None
        eps_x, eps_h = self.dynamics(flat[:, :3], flat[:, 3:], t.reshape(-1), batch, flat_context)
        out = z.new_zeros(z.shape)
        out[mask] = torch.cat([eps_x, eps_h], dim=1)
        return out

    # ------------------------------------------------------------------------------------------ schedule
    def gamma_at(self, t: Tensor) -> Tensor:
        """:math:`\\gamma_t` for ``t [B, 1]`` in the model's dtype."""
        return self.gamma(t).to(self.buffer.dtype)

    @staticmethod
    def _expand(values: Tensor, target: Tensor) -> Tensor:
        return values.reshape((values.shape[0],) + (1,) * (target.dim() - 1))

    def sigma(self, gamma: Tensor, target: Tensor) -> Tensor:
        r""":math:`\sigma = \sqrt{\mathrm{sigmoid}(\gamma)}`, broadcastable to ``target``."""
        return self._expand(torch.sqrt(torch.sigmoid(gamma)), target)

    def alpha(self, gamma: Tensor, target: Tensor) -> Tensor:
        r""":math:`\alpha = \sqrt{\mathrm{sigmoid}(-\gamma)}`, broadcastable to ``target``."""
        return self._expand(torch.sqrt(torch.sigmoid(-gamma)), target)

    def noise(self, shape: tuple[int, ...], node_mask: Tensor, draw: NoiseSource) -> Tensor:
        """Noise ``[B, M, 3 + F]``: the position part projected to zero mean, padded atoms zero."""
        raw = draw(shape) * node_mask
        return torch.cat([remove_mean_with_mask(raw[..., :3], node_mask), raw[..., 3:]], dim=2)

    # ---------------------------------------------------------------------------------------- data <-> z
    def dense_batch(self, graph: Data) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Padded ``(x [B, M, 3] centred, one_hot [B, M, K], charges [B, M, 1 or 0], node_mask [B, M, 1])``
        of clean molecules (``pos`` in Å, ``z``)."""
        require_fields(graph, type(self).__name__, ("pos", "z"))
        batch = node_graph_index(graph)
        lookup = torch.full((119,), -1, dtype=torch.long, device=graph.z.device)
        lookup[torch.tensor(self.species, device=graph.z.device)] = torch.arange(
            self.num_classes, device=graph.z.device
        )
        index = lookup[graph.z]
        if bool((index < 0).any()):
            unknown = sorted(set(graph.z[index < 0].tolist()))
            raise GraphError(f"EDM knows the elements {self.species}; got atomic numbers {unknown}")
        counts = torch.bincount(batch, minlength=num_graphs(graph))
        size = int(counts.max())
        slot = torch.arange(batch.shape[0], device=batch.device) - (torch.cumsum(counts, 0) - counts)[batch]
        dtype = graph.pos.dtype
        node_mask = graph.pos.new_zeros(counts.shape[0], size, 1)
        node_mask[batch, slot] = 1.0
        x = graph.pos.new_zeros(counts.shape[0], size, 3)
        x[batch, slot] = graph.pos
        one_hot = graph.pos.new_zeros(counts.shape[0], size, self.num_classes)
        one_hot[batch, slot] = F.one_hot(index, self.num_classes).to(dtype)
        charges = graph.pos.new_zeros(counts.shape[0], size, int(self.include_charges))
        if self.include_charges:
            charges[batch, slot, 0] = graph.z.to(dtype)
        return remove_mean_with_mask(x, node_mask), one_hot, charges, node_mask

    def normalize(self, x: Tensor, one_hot: Tensor, charges: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(x / n_x, [one_hot / n_h, charges / n_c])`` and :math:`\\log|\\det|` ``[B]`` of the position scaling."""
        x = x / self.norm_values[0]
        delta_log_px = -self._subspace_dim(node_mask) * math.log(self.norm_values[0])
        h = torch.cat([one_hot / self.norm_values[1] * node_mask, charges / self.norm_values[2] * node_mask], dim=2)
        return torch.cat([x, h], dim=2), delta_log_px

    def _subspace_dim(self, node_mask: Tensor) -> Tensor:
        return (node_mask[..., 0].sum(1) - 1) * self.n_dims

    # ------------------------------------------------------------------------------------------------ loss
    def loss(
        self,
        graph: Data,
        *,
        t_int: Tensor | None = None,
        noise: NoiseSource | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        r"""Per-molecule loss ``[B]`` of clean molecules ``graph`` (``pos`` in Å, ``z``).

        In training mode with ``loss_type="l2"``: :math:`\lVert \epsilon - \hat\epsilon \rVert^2 /
        ((3 + F) M_{\max})`, :math:`M_{\max}` the PADDED atom count of the batch (as the official code), at one
        :math:`t \sim U\{0..T\}`. Otherwise the VLB estimate of :math:`-\log p(x, h)` (in nats, positions in
        the units of ``pos``): prior KL + :math:`T\, L_t` at :math:`t \sim U\{1..T\}` + :math:`L_0` + constants.

        Args:
            t_int: ``[B]`` integer time steps to use instead of drawing them.
            noise: ``shape -> standard normal tensor`` (default ``torch.randn``); fixed noise for tests.
            context: ``[B, M, C]`` padded conditioning properties.
        """
        x, one_hot, charges, node_mask = self.dense_batch(graph)
        draw = noise if noise is not None else (lambda shape: torch.randn(shape, dtype=x.dtype, device=x.device))
        return self.loss_dense(x, one_hot, charges, node_mask, context=context, t_int=t_int, draw=draw)

    def loss_dense(
        self,
        x: Tensor,
        one_hot: Tensor,
        charges: Tensor,
        node_mask: Tensor,
        *,
        context: Tensor | None,
        t_int: Tensor | None,
        draw: NoiseSource,
    ) -> Tensor:
        """:meth:`loss` on padded tensors (official ``EnVariationalDiffusion.forward``)."""
        simple = self.training and self.loss_type == "l2"
        xh, delta_log_px = self.normalize(x, one_hot, charges, node_mask)
        if simple:
            delta_log_px = torch.zeros_like(delta_log_px)
        batch_size, size, dims = xh.shape
        t0_always = not self.training
        if t_int is None:
            t_int = torch.randint(int(t0_always), self.T + 1, (batch_size,), device=xh.device)
        t_int = t_int.reshape(batch_size, 1).to(xh.dtype)
        s, t = (t_int - 1) / self.T, t_int / self.T
        gamma_s, gamma_t = self.gamma_at(s), self.gamma_at(t)
        eps = self.noise((batch_size, size, dims), node_mask, draw)
        z_t = self.alpha(gamma_t, xh) * xh + self.sigma(gamma_t, xh) * eps
        net_out = self.phi(z_t, t, node_mask, context)
        error = _sum_except_batch((eps - net_out) ** 2)
        if simple:
            error = error / (dims * size)
            weight = torch.ones_like(error)
        else:
            weight = (torch.exp(-(gamma_s - gamma_t)) - 1).reshape(-1)
        loss_t = 0.5 * weight * error
        neg_log_constants = torch.zeros_like(loss_t) if simple else -self.log_constants_x_given_z0(node_mask)
        kl_prior = self.kl_prior(xh, node_mask)
        if t0_always:
            zeros = torch.zeros_like(t)
            gamma_0 = self.gamma_at(zeros)
            eps_0 = self.noise((batch_size, size, dims), node_mask, draw)
            z_0 = self.alpha(gamma_0, xh) * xh + self.sigma(gamma_0, xh) * eps_0
            net_out_0 = self.phi(z_0, zeros, node_mask, context)
            loss_0 = -self.log_pxh_given_z0(xh, z_0, gamma_0, eps_0, net_out_0, node_mask)
            loss = kl_prior + self.T * loss_t + neg_log_constants + loss_0
        else:
            t_is_zero = (t_int == 0).to(xh.dtype).reshape(-1)
            loss_0 = -self.log_pxh_given_z0(xh, z_t, gamma_t, eps, net_out, node_mask, dims * size if simple else 1.0)
            loss_t = loss_0 * t_is_zero + (1 - t_is_zero) * loss_t
            loss = kl_prior + (loss_t if simple else (self.T + 1) * loss_t) + neg_log_constants
        return loss - delta_log_px

    def kl_prior(self, xh: Tensor, node_mask: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(z_T \mid x, h) \,\|\, \mathcal{N}(0, I))` per molecule ``[B]`` (position part on
        the :math:`(M - 1) \cdot 3` dimensional subspace)."""
        gamma_T = self.gamma_at(torch.ones(xh.shape[0], 1, dtype=xh.dtype, device=xh.device))
        mu = self.alpha(gamma_T, xh) * xh
        sigma = self.sigma(gamma_T, xh)
        kl_h = _sum_except_batch((torch.log(1 / sigma) + 0.5 * (sigma**2 + mu[..., 3:] ** 2) - 0.5) * node_mask)
        sigma_x = sigma.reshape(-1)
        d = self._subspace_dim(node_mask)
        kl_x = d * torch.log(1 / sigma_x) + 0.5 * (d * sigma_x**2 + _sum_except_batch(mu[..., :3] ** 2)) - 0.5 * d
        return kl_x + kl_h

    def log_constants_x_given_z0(self, node_mask: Tensor) -> Tensor:
        r"""The :math:`\sigma_0`-dependent constants of :math:`\log p(x \mid z_0)`, ``[B]``."""
        gamma_0 = self.gamma_at(node_mask.new_zeros(node_mask.shape[0], 1)).reshape(-1)
        return self._subspace_dim(node_mask) * (-0.5 * gamma_0 - 0.5 * math.log(2 * math.pi))

    def log_pxh_given_z0(
        self,
        xh: Tensor,
        z_0: Tensor,
        gamma_0: Tensor,
        eps: Tensor,
        net_out: Tensor,
        node_mask: Tensor,
        error_scale: float = 1.0,
    ) -> Tensor:
        r""":math:`\log p(x, h \mid z_0)` without constants ``[B]``: Gaussian error on positions (divided by
        ``error_scale``, which the official l2 training loss sets to :math:`(3 + F) M_{\max}`); types and charges by
        integrating :math:`\mathcal{N}(z_{0,h}, \sigma_0)` over unit bins around each value, types normalised over
        the classes."""
        eps_x, net_x = eps[..., :3], net_out[..., :3]
        log_p_x = -0.5 * _sum_except_batch((eps_x - net_x) ** 2) / error_scale
        sigma_0 = self.sigma(gamma_0, z_0)
        k = self.num_classes
        onehot = xh[..., 3 : 3 + k] * self.norm_values[1]
        estimated_cat = z_0[..., 3 : 3 + k] * self.norm_values[1]
        sigma_cat = sigma_0 * self.norm_values[1]
        centered = estimated_cat - 1
        log_cat = torch.log(
            _cdf_standard_gaussian((centered + 0.5) / sigma_cat)
            - _cdf_standard_gaussian((centered - 0.5) / sigma_cat)
            + 1e-10
        )
        log_prob = log_cat - torch.logsumexp(log_cat, dim=2, keepdim=True)
        log_p_h = _sum_except_batch(log_prob * onehot * node_mask)
        if self.include_charges:
            sigma_int = sigma_0 * self.norm_values[2]
            charges = torch.round(xh[..., -1:] * self.norm_values[2])
            centered_int = charges - z_0[..., -1:] * self.norm_values[2]
            log_int = torch.log(
                _cdf_standard_gaussian((centered_int + 0.5) / sigma_int)
                - _cdf_standard_gaussian((centered_int - 0.5) / sigma_int)
                + 1e-10
            )
            log_p_h = log_p_h + _sum_except_batch(log_int * node_mask)
        return log_p_x + log_p_h

    # -------------------------------------------------------------------------------------------- sampling
    def sample_p_zs_given_zt(
        self, s: Tensor, t: Tensor, z_t: Tensor, node_mask: Tensor, context: Tensor | None, draw: NoiseSource
    ) -> Tensor:
        r"""One ancestral step :math:`z_s \sim p(z_s \mid z_t)`, ``s, t [B, 1]``:

        .. math:: \mu = \frac{z_t}{\alpha_{t|s}} - \frac{\sigma_{t|s}^2}{\alpha_{t|s}\sigma_t}\hat\epsilon, \qquad
            \sigma = \frac{\sigma_{t|s}\sigma_s}{\sigma_t}
        """
        gamma_s, gamma_t = self.gamma_at(s), self.gamma_at(t)
        sigma2_t_given_s = self._expand(-torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t)), z_t)
        alpha_t_given_s = self._expand(torch.exp(0.5 * (F.logsigmoid(-gamma_t) - F.logsigmoid(-gamma_s))), z_t)
        sigma_s, sigma_t = self.sigma(gamma_s, z_t), self.sigma(gamma_t, z_t)
        eps_t = self.phi(z_t, t, node_mask, context)
        mu = z_t / alpha_t_given_s - (sigma2_t_given_s / alpha_t_given_s / sigma_t) * eps_t
        sigma = torch.sqrt(sigma2_t_given_s) * sigma_s / sigma_t
        z_s = mu + sigma * self.noise(tuple(z_t.shape), node_mask, draw)
        return torch.cat([remove_mean_with_mask(z_s[..., :3], node_mask), z_s[..., 3:]], dim=2)

    def sample_p_xh_given_z0(
        self, z_0: Tensor, node_mask: Tensor, context: Tensor | None, draw: NoiseSource
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The last step: positions from the denoised mean plus noise; types and charges from ``z_0`` itself.

        Returns:
            ``(x [B, M, 3] in data units, one_hot [B, M, K], charges [B, M, 1 or 0])``.
        """
        zeros = z_0.new_zeros(z_0.shape[0], 1)
        gamma_0 = self.gamma_at(zeros)
        sigma_x = torch.exp(0.5 * gamma_0).unsqueeze(1)
        net_out = self.phi(z_0, zeros, node_mask, context)
        mu = 1.0 / self.alpha(gamma_0, z_0) * (z_0 - self.sigma(gamma_0, z_0) * net_out)
        xh = mu + sigma_x * self.noise(tuple(z_0.shape), node_mask, draw)
        x = xh[..., :3] * self.norm_values[0]
        k = self.num_classes
        h_cat = z_0[..., 3 : 3 + k] * self.norm_values[1] * node_mask
        one_hot = F.one_hot(torch.argmax(h_cat, dim=2), k).to(z_0.dtype) * node_mask
        charges = torch.round(z_0[..., 3 + k :] * self.norm_values[2] * node_mask)
        return x, one_hot, charges

    @torch.no_grad()
    def sample_dense(
        self, node_mask: Tensor, context: Tensor | None = None, draw: NoiseSource | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Ancestral sampling of padded molecules with atoms ``node_mask [B, M, 1]``; ``draw`` as in :meth:`loss`.

        Returns:
            ``(x [B, M, 3], one_hot [B, M, K], charges [B, M, 1 or 0])`` as :meth:`sample_p_xh_given_z0`.
        """
        if draw is None:
            dtype, device = node_mask.dtype, node_mask.device

            def draw(shape: tuple[int, ...]) -> Tensor:
                return torch.randn(shape, dtype=dtype, device=device)

        batch_size, size, _ = node_mask.shape
        shape = (batch_size, size, 3 + self.in_node_nf)
        z = self.noise(shape, node_mask, draw)
        for step in reversed(range(self.T)):
            s = node_mask.new_full((batch_size, 1), step / self.T)
            t = node_mask.new_full((batch_size, 1), (step + 1) / self.T)
            z = self.sample_p_zs_given_zt(s, t, z, node_mask, context, draw)
        x, one_hot, charges = self.sample_p_xh_given_z0(z, node_mask, context, draw)
        drift = float(torch.sum(x, dim=1).abs().max())
        if drift > 5e-2:
            logger.warning("centre-of-mass drift %.3f in EDM samples: projecting the positions", drift)
            x = remove_mean_with_mask(x, node_mask)
        return x, one_hot, charges

    def _atom_counts(
        self, n: int, n_atoms: int | Sequence[int] | Mapping[int, int] | None, generator: torch.Generator
    ) -> list[int]:
        if isinstance(n_atoms, int):
            return [n_atoms] * n
        if n_atoms is None or isinstance(n_atoms, Mapping):
            histogram = self.n_nodes if n_atoms is None else {int(k): int(v) for k, v in n_atoms.items()}
            sizes = list(histogram)
            weights = torch.tensor([histogram[k] for k in sizes], dtype=torch.float64)
            picks = torch.multinomial(weights, n, replacement=True, generator=generator)
            return [sizes[i] for i in picks.tolist()]
        counts = [int(c) for c in n_atoms]
        if len(counts) != n:
            raise ValueError(f"n_atoms has {len(counts)} entries for n={n} molecules")
        return counts

    @torch.no_grad()
    def sample(
        self,
        n: int,
        n_atoms: int | Sequence[int] | Mapping[int, int] | None = None,
        context: Tensor | None = None,
        *,
        seed: int | None = None,
        batch_size: int = 100,
    ) -> list[ase.Atoms]:
        """Sample ``n`` molecules.

        Args:
            n: number of molecules.
            n_atoms: atoms per molecule: ``None`` draws from the training histogram (``n_nodes``), an int fixes
                it, a mapping ``{size: count}`` is another histogram, a sequence gives each molecule's size.
            context: ``[n, context_nf]`` normalised properties for a conditional model (one row per molecule).
            seed: seeds the atom counts and the diffusion noise (``None``: a seed drawn from torch's global
                generator, so ``torch.manual_seed`` makes it repeatable).
            batch_size: molecules denoised together.

        Returns:
            ``ase.Atoms`` with positions in Å (centred) and the elements of ``species``; the sampled integer
            charges are in ``atoms.arrays["edm_charges"]`` when the model has them.
        """
        if n < 1 or batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
        if self.context_nf and (context is None or tuple(context.shape) != (n, self.context_nf)):
            raise ValueError(f"this model is conditional: pass context [n, {self.context_nf}]")
        dtype, device = self.buffer.dtype, self.buffer.device
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        counts = self._atom_counts(n, n_atoms, torch.Generator().manual_seed(generator.initial_seed()))
        if min(counts) < 1:
            raise ValueError(f"every molecule needs at least one atom, got sizes {sorted(set(counts))}")

        def draw(shape: tuple[int, ...]) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device, generator=generator)

        molecules: list[ase.Atoms] = []
        for start in range(0, n, batch_size):
            sizes = counts[start : start + batch_size]
            size = max(sizes)
            node_mask = torch.arange(size, device=device)[None, :] < torch.tensor(sizes, device=device)[:, None]
            node_mask = node_mask.to(dtype)[..., None]
            batch_context = None
            if context is not None:
                batch_context = context[start : start + len(sizes)].to(device, dtype)[:, None, :] * node_mask
            x, one_hot, charges = self.sample_dense(node_mask, batch_context, draw)
            for b, count in enumerate(sizes):
                numbers = [self.species[i] for i in one_hot[b, :count].argmax(1).tolist()]
                atoms = ase.Atoms(numbers=numbers, positions=x[b, :count].double().cpu().numpy())
                if self.include_charges:
                    atoms.arrays["edm_charges"] = charges[b, :count, 0].long().cpu().numpy()
                molecules.append(atoms)
        return molecules


# ------------------------------------------------------------------------------------------------- weights
def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: EDM) -> dict[str, Tensor]:
    """Official ``EnVariationalDiffusion`` state dict -> this model's (the names already match; a
    ``module.`` prefix from ``DataParallel`` is stripped). Already-converted dicts pass through."""
    out = {}
    for key, value in state_dict.items():
        out[key.removeprefix("module.")] = value
    missing = set(model.state_dict()) - set(out)
    if missing == {"buffer"}:
        out["buffer"] = torch.zeros(1)
    return out


# ------------------------------------------------------------------------------------------------ variants
_VARIANTS: dict[str, dict[str, Any]] = {
    "edm": {},
    "edm-qm9": {"hidden_nf": 256, "n_layers": 9, "norm_values": (1.0, 4.0, 10.0), "include_charges": True},
    "edm-qm9-conditional": {
        "hidden_nf": 192,
        "n_layers": 9,
        "norm_values": (1.0, 8.0, 1.0),
        "include_charges": False,
        "context_nf": 1,
    },
}


def _create_edm(variant: str, **kwargs: Any) -> EDM:
    """Build ``variant`` from its default configuration updated by ``kwargs``."""
    return EDM(**{**_VARIANTS[variant], **kwargs})


@register_model("edm", task="generative")
def edm(**kwargs: Any) -> EDM:
    """EDM (Hoogeboom et al. 2022): equivariant diffusion over positions, atom types and charges."""
    return _create_edm("edm", **kwargs)


@register_model("edm-qm9", task="generative")
def edm_qm9(**kwargs: Any) -> EDM:
    """EDM for QM9 with hydrogens: 9 blocks of 256 features, polynomial_2 schedule, T = 1000."""
    return _create_edm("edm-qm9", **kwargs)


@register_model("edm-qm9-conditional", task="generative")
def edm_qm9_conditional(**kwargs: Any) -> EDM:
    """Property-conditional EDM for QM9: 192 features, one context property, no charges."""
    return _create_edm("edm-qm9-conditional", **kwargs)
