r"""One equivariance check for every model: rotations, reflections, translations and permutations.

For a random orthogonal :math:`Q \in O(3)` (proper and improper), a translation :math:`t` and a permutation
:math:`P` of the atoms within each graph, the inputs are transformed as :math:`x \mapsto x Q^\top + t`
(positions), :math:`v \mapsto v Q^\top` (velocities), :math:`C \mapsto C Q^\top` (cell rows), and each
output must transform by its type:

========================  ==========================================================
``"scalar"``              unchanged (energy, charges, logits, ...)
``"vector"``              :math:`y Q^\top` (forces, velocities, dipoles)
``"pseudovector"``        :math:`\det(Q)\, y Q^\top` (angular momenta, magnetic moments)
``"position"``            :math:`y Q^\top + t` (predicted coordinates)
``"tensor2"``             :math:`Q\, S\, Q^\top` (stress, virial, polarisability)
========================  ==========================================================

Per-atom outputs (leading dimension = number of atoms) are permuted with the atoms.

Example:
    >>> import torch
    >>> from zoo.testing import assert_equivariant, molecule_graph
    >>> class Radius(torch.nn.Module):  # E(3)-invariant: mean distance to the centroid
    ...     def forward(self, graph):
    ...         centred = graph.pos - graph.pos.mean(0)
    ...         return {"energy": centred.norm(dim=1).mean().reshape(1)}
    >>> report = assert_equivariant(Radius(), molecule_graph())
    >>> report.passed
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from zoo.geometry.frames import DEFAULT_OUTPUT_TYPES, OutputType

__all__ = ["EquivarianceReport", "OutputType", "assert_equivariant", "random_orthogonal"]

INPUT_VECTORS = ("vel",)
TOLERANCES = {torch.float64: (1e-9, 1e-7), torch.float32: (1e-5, 1e-4)}


def random_orthogonal(generator: torch.Generator, *, proper: bool, dtype=torch.float64) -> torch.Tensor:
    """A Haar-random 3x3 orthogonal matrix with determinant +1 (``proper``) or -1."""
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


@dataclass(frozen=True)
class Row:
    """One comparison: an output under one transform."""

    transform: str
    output: str
    kind: str
    max_abs_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance


@dataclass(frozen=True)
class EquivarianceReport:
    """The error table returned by :func:`assert_equivariant`."""

    rows: tuple[Row, ...]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def max_error(self) -> float:
        return max((row.max_abs_error for row in self.rows), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'transform':<22}{'output':<14}{'type':<14}{'max |error|':>14}{'tolerance':>12}  ok"]
        for row in self.rows:
            lines.append(
                f"{row.transform:<22}{row.output:<14}{row.kind:<14}{row.max_abs_error:>14.3e}"
                f"{row.tolerance:>12.1e}  {'yes' if row.passed else 'NO'}"
            )
        return "\n".join(lines)


def _permutation_within_graphs(graph, generator: torch.Generator) -> torch.Tensor:
    """``perm[new] = old``: a random permutation that keeps every atom in its own graph."""
    num_atoms = graph.pos.shape[0]
    batch = graph.batch if getattr(graph, "batch", None) is not None else torch.zeros(num_atoms, dtype=torch.long)
    perm = torch.empty(num_atoms, dtype=torch.long)
    for index in torch.unique(batch):
        members = torch.nonzero(batch == index).flatten()
        perm[members] = members[torch.randperm(len(members), generator=generator)]
    return perm


def _transform_graph(graph, q: torch.Tensor, t: torch.Tensor, perm: torch.Tensor | None):
    out = graph.clone()
    num_atoms = graph.pos.shape[0]
    out.pos = graph.pos @ q.T + t
    for key in INPUT_VECTORS:
        if getattr(graph, key, None) is not None:
            out[key] = graph[key] @ q.T
    if getattr(graph, "cell", None) is not None:
        out.cell = graph.cell @ q.T
    if perm is not None:
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(num_atoms)
        for key, value in list(out.items()):
            if key == "edge_index":
                out[key] = inverse[value]
            elif key.startswith("edge_") or key in ("ptr", "batch") or not torch.is_tensor(value):
                continue
            elif value.dim() > 0 and value.shape[0] == num_atoms:
                out[key] = value[perm]
    return out


def _expected(value: torch.Tensor, kind: OutputType, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if kind == "scalar":
        return value
    if kind == "vector":
        return value @ q.T
    if kind == "pseudovector":
        return torch.det(q) * (value @ q.T)
    if kind == "position":
        return value @ q.T + t
    if kind == "tensor2":
        return q @ value @ q.T
    raise ValueError(f"unknown output type {kind!r}; use one of scalar, vector, pseudovector, position, tensor2")


def _cast_graph(graph, dtype: torch.dtype):
    out = graph.clone()
    for key, value in list(out.items()):
        if torch.is_tensor(value) and value.is_floating_point():
            out[key] = value.to(dtype)
    return out


def assert_equivariant(
    model: torch.nn.Module | Callable[..., Mapping[str, torch.Tensor]],
    graph,
    *,
    output_types: Mapping[str, OutputType] | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    translation: bool = True,
    permutation: bool = True,
    parity: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    raise_on_failure: bool = True,
) -> EquivarianceReport:
    r"""Check that ``model(graph)`` transforms correctly under :math:`E(3)` and atom permutations.

    The model (deep-copied, cast to ``dtype``) is run on the graph and on transformed copies: a proper
    rotation, a reflection (improper), a translation, a permutation within each graph, and all of them
    together. Each output is compared with the transformed reference output.

    Args:
        model: a module or callable taking an ``AtomsGraph`` (or batch) and returning a dict of tensors.
        graph: the input; float fields are cast to ``dtype``.
        output_types: type of each output key to check (defaults by name: ``energy`` scalar, ``forces``
            vector, ``pos`` position, ``stress`` tensor2, ...). Keys not listed and not known raise.
        dtype: computation dtype, float64 by default so errors are round-off, not noise.
        seed: seeds the random transforms.
        translation, permutation: include those transforms.
        parity: include reflections (improper rotations). ``False`` for SE(3)-only architectures such as
            eSCN and EquiformerV2, whose outputs are not meant to be reflection-equivariant.
        atol, rtol: tolerance :math:`|y' - \hat y| \le atol + rtol \max|\hat y|` (defaults by dtype).
        raise_on_failure: raise ``AssertionError`` with the table if any comparison fails.

    Returns:
        The :class:`EquivarianceReport` (one row per transform and output).
    """
    default_atol, default_rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model).to(dtype)
    graph = _cast_graph(graph, dtype)
    reference = model(graph)
    types = {**DEFAULT_OUTPUT_TYPES, **(output_types or {})}
    checked = list(output_types) if output_types else [k for k in reference if k in DEFAULT_OUTPUT_TYPES]
    unknown = [k for k in reference if k not in types]
    if unknown:
        raise ValueError(
            f"outputs {unknown} have no known transformation: pass output_types={{name: 'scalar' | 'vector' | "
            "'pseudovector' | 'position' | 'tensor2'}}"
        )
    if not checked:
        raise ValueError(f"the model returned no outputs to check (got keys {list(reference)})")

    generator = torch.Generator().manual_seed(seed)
    identity = torch.eye(3, dtype=dtype)
    zero = torch.zeros(3, dtype=dtype)
    shift = (torch.randn(3, generator=generator, dtype=torch.float64) * 3.0).to(dtype)
    rotation = random_orthogonal(generator, proper=True, dtype=dtype)
    reflection = random_orthogonal(generator, proper=False, dtype=dtype)
    perm = _permutation_within_graphs(graph, generator) if permutation else None
    transforms = [("rotation", rotation, zero, None)]
    if parity:
        transforms.append(("reflection", reflection, zero, None))
    if translation:
        transforms.append(("translation", identity, shift, None))
    if perm is not None:
        transforms.append(("permutation", identity, zero, perm))
    combined = reflection @ rotation if parity else rotation @ rotation
    transforms.append(("all combined", combined, shift if translation else zero, perm))

    num_atoms = graph.pos.shape[0]
    rows = []
    for name, q, t, p in transforms:
        output = model(_transform_graph(graph, q, t, p))
        for key in checked:
            if key not in output:
                raise KeyError(f"output {key!r} missing from the model's outputs {list(output)}")
            ref = reference[key].detach()
            expected = _expected(ref, types[key], q, t)
            if p is not None and ref.dim() > 0 and ref.shape[0] == num_atoms:
                expected = expected[p]
            error = (output[key].detach() - expected).abs().max().item() if ref.numel() else 0.0
            tolerance = atol + rtol * (ref.abs().max().item() if ref.numel() else 0.0)
            rows.append(Row(name, key, types[key], error, tolerance))
    report = EquivarianceReport(tuple(rows))
    if raise_on_failure and not report.passed:
        raise AssertionError(f"model is not equivariant:\n{report}")
    return report
