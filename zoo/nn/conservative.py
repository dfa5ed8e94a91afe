r"""Conservative forces and stress from an energy function, by automatic differentiation.

For a potential :math:`E(\{x_i\}, C)` the forces are :math:`F_i = -\partial E / \partial x_i` and the stress is
the derivative with respect to a homogeneous strain :math:`\varepsilon` applied to positions and cell,
:math:`x \mapsto x (1 + \varepsilon)`, :math:`C \mapsto C (1 + \varepsilon)`:

.. math:: \sigma = \frac{1}{V} \left. \frac{\partial E}{\partial \varepsilon} \right|_{\varepsilon = 0},

in eV/Å³ for energies in eV (ASE's sign convention: positive under tension).

Example:
    >>> import torch
    >>> from zoo.nn.conservative import conservative_outputs
    >>> from zoo.testing import bulk_graph
    >>> from zoo.graph import edge_vectors
    >>> def pair_energies(graph):  # a harmonic pair potential, half of each bond energy on its target atom
    ...     bond = 0.5 * (edge_vectors(graph)[1] - 2.5) ** 2
    ...     return torch.zeros(graph.pos.shape[0], dtype=bond.dtype).index_add(0, graph.edge_index[1], bond)
    >>> out = conservative_outputs(pair_energies, bulk_graph(), stress=True)
    >>> sorted(out), out["stress"].shape
    (['energies', 'energy', 'forces', 'stress'], torch.Size([1, 3, 3]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.data import Data

from zoo.graph import GraphError, node_graph_index, num_graphs

__all__ = ["conservative_outputs"]


def conservative_outputs(
    atom_energy_fn: Callable[[Data], Tensor],
    graph: Data,
    *,
    stress: bool = False,
    create_graph: bool = False,
) -> dict[str, Tensor]:
    """Energy ``[B]``, per-atom energies ``[N]``, forces ``[N, 3]`` and, with ``stress=True``, stress
    ``[B, 3, 3]`` from the per-atom energies ``atom_energy_fn(graph) -> [N]``.

    ``atom_energy_fn`` must compute everything geometric from ``graph.pos`` and ``graph.cell`` (e.g. through
    :func:`zoo.graph.edge_vectors`), so that the strain reaches it. ``create_graph=True`` keeps the derivatives
    differentiable (for training on forces).

    Raises:
        GraphError: stress is asked of a structure that is not periodic in all three directions.
    """
    batch = node_graph_index(graph)
    with torch.enable_grad():
        pos = graph.pos.detach().requires_grad_(True)
        strained = copy.copy(graph)
        inputs = [pos]
        if stress:
            if not bool(graph.pbc.all()):
                raise GraphError("stress needs a cell periodic in all three directions (pbc=True); this one is not")
            strain = torch.zeros(num_graphs(graph), 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))  # [B, 3, 3]
            strained.pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch])
            strained.cell = graph.cell + torch.bmm(graph.cell, symmetric)
            inputs.append(strain)
        else:
            strained.pos = pos
        atom_energy = atom_energy_fn(strained)  # [N]
        energy = atom_energy.new_zeros(num_graphs(graph)).index_add(0, batch, atom_energy)
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
    out = {"energy": energy, "energies": atom_energy, "forces": -grads[0]}
    if stress:
        volume = torch.linalg.det(graph.cell).abs()  # [B]
        out["stress"] = grads[1] / volume[:, None, None]
    return out
