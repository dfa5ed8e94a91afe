"""Preparing a pretrained model for fine-tuning: freezing, optional re-initialisation, energy-reference refit.

Nothing is re-initialised unless asked: the pretrained heads are kept. Freezing and re-initialisation take
shell-style patterns on parameter and module names (``model.named_parameters()`` / ``named_modules()``); a
pattern that matches nothing is an error that lists the closest names.

Energy-reference refit: a pretrained potential's per-element energies :math:`e_Z` follow the reference of its
training data (e.g. DFT code and pseudopotentials). Fine-tuning data with another reference differs by a
per-element offset, which is fitted by least squares on the training set before training,

.. math:: \\delta = \\arg\\min_\\delta \\sum_s \\Big(E_s - \\hat E_s - \\sum_Z n_{s,Z}\\, \\delta_Z\\Big)^2,

(minimum-norm solution when the compositions do not determine every element) and added to the model's
per-element energy parameter, so the forces are unchanged and the energies start on the right reference.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ase.data import chemical_symbols

from zoo.graph import AtomsGraph, batch_graphs

__all__ = ["ReferenceRefit", "find_energy_reference", "freeze", "refit_energy_reference", "reinitialize"]

_REFERENCE_NAMES = ("element_energ", "atomic_energ", "atom_ref", "energy_ref", "e0")


def _no_match(kind: str, pattern: str, names: list[str]) -> ValueError:
    close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else f"; names look like: {', '.join(names[:5])}"
    return ValueError(f"{kind} pattern {pattern!r} matches no name{hint}")


def freeze(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name matches any pattern; returns their names."""
    names = [name for name, _ in model.named_parameters()]
    frozen: list[str] = []
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise _no_match("finetune.freeze", pattern, names)
        frozen.extend(name for name in matched if name not in frozen)
    parameters = dict(model.named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(False)
    return frozen


def reinitialize(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Call ``reset_parameters()`` on modules (and their sub-modules) whose name matches; returns their names."""
    modules = dict(model.named_modules())
    names = [name for name in modules if name]
    done: list[str] = []
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise _no_match("finetune.reinitialize", pattern, names)
        for name in matched:
            for sub_name, module in modules[name].named_modules(prefix=name):
                reset = getattr(module, "reset_parameters", None)
                if callable(reset) and sub_name not in done:
                    reset()
                    done.append(sub_name)
    return done


def find_energy_reference(model: torch.nn.Module, name: str | None = None) -> str | None:
    """Name of the parameter holding per-element energies (``[Z, 1]`` or ``[Z]``, row = atomic number).

    ``name`` (from ``finetune.energy_reference_parameter``) wins, then ``model.metadata
    ["energy_reference_parameter"]``, then the one parameter whose name contains ``element_energ``,
    ``atomic_energ``, ``atom_ref``, ``energy_ref`` or ``e0``; ``None`` if there is no such parameter.
    """
    parameters = dict(model.named_parameters())
    name = name or getattr(model, "metadata", {}).get("energy_reference_parameter")
    if name is not None:
        if name not in parameters:
            raise _no_match("energy reference parameter", name, list(parameters))
        return name
    found = [
        key
        for key, value in parameters.items()
        if any(part in key.lower() for part in _REFERENCE_NAMES)
        and (value.dim() == 1 or (value.dim() == 2 and value.shape[1] == 1))
    ]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class ReferenceRefit:
    """Outcome of :func:`refit_energy_reference`: the per-element shifts (eV) and the training energy RMSE per
    atom (eV/atom) before and after them."""

    shifts: dict[str, float]
    rmse_before: float
    rmse_after: float
    applied: bool
    parameter: str | None


@torch.no_grad()
def _energies(
    model: torch.nn.Module, graphs: Sequence[AtomsGraph], device: torch.device, batch_size: int
) -> torch.Tensor:
    out = []
    for start in range(0, len(graphs), batch_size):
        batch = batch_graphs(graphs[start : start + batch_size]).to(device)
        with torch.enable_grad():
            out.append(model(batch)["energy"].detach().double().cpu())
    return torch.cat(out)


def refit_energy_reference(
    model: torch.nn.Module,
    graphs: Sequence[AtomsGraph],
    *,
    mode: str,
    parameter: str | None = None,
    device: torch.device | None = None,
    batch_size: int = 16,
) -> ReferenceRefit | None:
    """Fit per-element energy offsets between ``model`` and the labels of ``graphs`` and apply them.

    Args:
        model: a potential with a per-element energy parameter (see :func:`find_energy_reference`).
        graphs: training graphs with ``energy`` labels and edges.
        mode: ``"refit"`` always applies the fit; ``"auto"`` applies it when it lowers the per-atom energy
            RMSE by at least 20%; ``"keep"`` does nothing and returns ``None``.
        parameter: the parameter name (default: found by name).
        device: where to evaluate (default: the model's).
        batch_size: structures per evaluation batch.

    Returns:
        The fit, or ``None`` with ``mode="keep"`` or (in ``"auto"`` mode) without a per-element parameter.

    Raises:
        ValueError: ``mode="refit"`` and the model has no per-element energy parameter.
    """
    if mode == "keep":
        return None
    name = find_energy_reference(model, parameter)
    if name is None:
        if mode == "refit":
            raise ValueError(
                "finetune.energy_reference is 'refit' but the model has no per-element energy parameter; "
                "name it with finetune.energy_reference_parameter"
            )
        return None
    weight = dict(model.named_parameters())[name]
    device = device or weight.device
    was_training = model.training
    model.eval()
    try:
        predicted = _energies(model, graphs, device, batch_size)
    finally:
        model.train(was_training)
    labels = torch.cat([g.energy.reshape(-1).double().cpu() for g in graphs])
    natoms = torch.tensor([g.pos.shape[0] for g in graphs], dtype=torch.float64)
    elements = sorted({int(z) for g in graphs for z in g.z.tolist()})
    column = {z: i for i, z in enumerate(elements)}
    composition = torch.zeros(len(graphs), len(elements), dtype=torch.float64)
    for row, graph in enumerate(graphs):
        for z, count in zip(*torch.unique(graph.z.cpu(), return_counts=True), strict=True):
            composition[row, column[int(z)]] = float(count)
    residual = labels - predicted
    delta = torch.linalg.lstsq(composition, residual[:, None], driver="gelsd").solution[:, 0]
    after = residual - composition @ delta
    rmse_before = float(((residual / natoms) ** 2).mean().sqrt())
    rmse_after = float(((after / natoms) ** 2).mean().sqrt())
    applied = mode == "refit" or rmse_after < 0.8 * rmse_before
    if applied:
        index = torch.tensor(elements, device=weight.device)
        shift = delta.to(weight.device, weight.dtype)
        with torch.no_grad():
            weight.index_add_(0, index, shift[:, None] if weight.dim() == 2 else shift)
    shifts = {chemical_symbols[z]: float(delta[column[z]]) for z in elements}
    return ReferenceRefit(shifts, rmse_before, rmse_after, applied, name)
