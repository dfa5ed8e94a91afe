"""fairchem 1.x checkpoints (EquiformerV2, eSCN) -> zoo models.

A fairchem checkpoint is a pickle ``{"state_dict", "config", "normalizers", "ema", "elementrefs"?, ...}``
(opened here with ``torch.load(weights_only=True)`` only). The conversion:

1. reads the model configuration from ``config`` — legacy ``{"model": name, "model_attributes": {...}}``,
   ``{"model": {"name": ..., ...}}``, or the backbone + heads ("hydra") layout
   ``{"model": {"name": "hydra", "backbone": {...}, "heads": {...}}}``, whose heads may include the OMat24
   ``rank2_symmetric_head`` stress head; the DeNS backbone ``equiformer_v2_dens_backbone`` (``EqV2DeNSBackbone``)
   with its heads becomes ``dens=True`` — and maps it to zoo's constructor arguments (:func:`model_args`;
   eSCN attributes the configuration leaves out take fairchem's defaults), refusing options zoo does not
   implement;
2. takes the plain ``state_dict`` weights, as fairchem's ASE calculator predicts with them, or with
   ``use_ema=True`` the EMA shadow parameters (paired with the trainable parameters in registration order);
3. remaps keys (:func:`convert_state_dict`): strips zero to two ``module.`` prefixes, moves the hydra
   ``backbone.`` / ``output_heads.<name>.`` entries to the monolithic names (the DeNS heads' ``scalar_block``
   and ``vector_block`` to ``energy_block`` and ``force_block``), and drops derived constants
   (Wigner index maps, S2 grids, index buffers) that zoo rebuilds;
4. carries the normalisers (``out * std + mean``; for the stress, those of its isotropic and anisotropic
   parts, recombined after denormalising as fairchem's trainer does) and the energy references (OC22 linear
   references, scaled by the energy std as fairchem applies them before denormalising; OMat element
   references) into the model, so its outputs are in eV, eV/Å and eV/Å³;
5. loads with ``strict=True``; an energy-only checkpoint (``regress_forces: False``, the ODAC IS2RE "direct"
   models) becomes a ``property`` model (no force head, no forces), which the ASE calculator refuses.

Example:
    >>> import zoo
    >>> from zoo.converters import get_converter
    >>> get_converter("fairchem").__name__
    'convert_fairchem'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.converters import register_converter
from zoo.registry import create_model

__all__ = ["ConversionError", "convert_fairchem", "convert_state_dict", "load_checkpoint", "model_args"]

# Constants every fairchem eSCN/EquiformerV2 rebuilds at construction (and zoo rebuilds too).
DERIVED = re.compile(
    r"(^|\.)(SO3_rotation|SO3_grid|mappingReduced|SO3_edge_rot)\.|"
    r"(^|\.)(expand_index|balance_degree_weight|sphere_points|sphharm_weights\.\d+)$"
)
# Parameters fairchem creates with requires_grad=False: absent from the EMA shadow.
FROZEN = re.compile(r"(^|\.)(energy_lin_ref|sphere_points|sphharm_weights\.\d+)$")

_EQV2_UNSUPPORTED = {
    "share_atom_edge_embedding": False,
    "use_m_share_rad": False,
    "use_s2_act_attn": False,
    "use_atom_edge_embedding": True,
    "distance_function": "gaussian",
}
_EQV2_ARGS = (
    "max_neighbors",
    "max_radius",
    "max_num_elements",
    "num_layers",
    "sphere_channels",
    "attn_hidden_channels",
    "num_heads",
    "attn_alpha_channels",
    "attn_value_channels",
    "ffn_hidden_channels",
    "norm_type",
    "grid_resolution",
    "edge_channels",
    "use_attn_renorm",
    "use_gate_act",
    "use_grid_mlp",
    "use_sep_s2_act",
    "avg_num_nodes",
    "avg_degree",
    "regress_forces",
    "enforce_max_neighbors_strictly",
)
# fairchem's eSCN constructor defaults (zoo's ESCN defaults are the published OC20 settings instead).
_ESCN_DEFAULTS = {
    "max_neighbors": 40,
    "cutoff": 8.0,
    "max_num_elements": 90,
    "num_layers": 8,
    "sphere_channels": 128,
    "hidden_channels": 256,
    "edge_channels": 128,
    "num_sphere_samples": 128,
    "basis_width_scalar": 1.0,
    "distance_resolution": 0.02,
    "resolution": None,
    "regress_forces": True,
}
_DENS_MODULE = "fairchem.core.models.equiformer_v2.equiformer_v2_dens."
_DENS_BACKBONES = frozenset({"equiformer_v2_dens_backbone", _DENS_MODULE + "EqV2DeNSBackbone"})
_FAMILIES = {
    "equiformer_v2": "equiformer_v2",
    "equiformer_v2_backbone": "equiformer_v2",
    **dict.fromkeys(_DENS_BACKBONES, "equiformer_v2"),
    "escn": "escn",
    "escn_backbone": "escn",
}
# Hydra head name -> where its parameters live in zoo's model (``output_heads.<name>.<rest>`` -> ``<prefix><rest>``).
_HEADS = {"energy": "", "forces": "", "stress": "stress_head."}
# DeNS head modules (fairchem 1.10's registry names and class paths, and those of the earlier DeNS code the
# MPtrj configurations name) and their block names in the 1.10 code.
_DENS_HEADS = {
    "energy": frozenset(
        {
            "eqV2_DeNS_scalar_head",
            _DENS_MODULE + "DeNSScalarHead",
            "equiformer_v2_dens_energy_head",
            _DENS_MODULE + "DeNSEnergyHead",
        }
    ),
    "forces": frozenset(
        {
            "eqV2_DeNS_vector_head",
            _DENS_MODULE + "DeNSVectorHead",
            "equiformer_v2_dens_force_head",
            _DENS_MODULE + "DeNSForceHead",
        }
    ),
    "stress": frozenset({"dens_rank2_symmetric_head", _DENS_MODULE + "DeNSRank2Head"}),
}
_HEAD_BLOCKS = {"scalar_block.": "energy_block.", "vector_block.": "force_block."}
_STRESS_MODULE = "rank2_symmetric_head"
_STRESS_ARGS = ("use_source_target_embedding", "edge_level_mlp", "num_mlp_layers", "extensive", "avg_num_nodes")


class ConversionError(ValueError):
    """A fairchem checkpoint zoo cannot convert; the message says which field and why."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a fairchem checkpoint with ``torch.load(weights_only=True)`` on the CPU."""
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises UnpicklingError, RuntimeError or EOFError
        raise ConversionError(
            f"{path} could not be opened as a fairchem checkpoint with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise ConversionError(f"{path} is not a fairchem checkpoint (a dict with 'state_dict' and 'config')")
    return checkpoint


def _stress_head(head: Mapping[str, Any], dens: bool) -> dict[str, Any]:
    """zoo :class:`~zoo.nn.rank2.Rank2SymmetricHead` arguments from fairchem's stress head configuration
    (``rank2_symmetric_head``, or its DeNS subclass on the DeNS backbone: the same head at inference)."""
    allowed = {_STRESS_MODULE} | (_DENS_HEADS["stress"] if dens else set())
    if head.get("module") not in allowed:
        raise ConversionError(
            f"config.model.heads.stress.module={head.get('module')!r}: zoo converts only {sorted(allowed)}"
            + ("" if dens else " on this backbone (the DeNS heads need the DeNS backbone)")
        )
    if not head.get("decompose", False):
        raise ConversionError("config.model.heads.stress.decompose=False: zoo converts only decompose=True")
    if head.get("output_name", "stress") != "stress":
        raise ConversionError(f"config.model.heads.stress.output_name={head['output_name']!r}: only 'stress'")
    return {key: head[key] for key in _STRESS_ARGS if key in head}


def _check_dens_heads(heads: Mapping[str, Any], dens: bool) -> None:
    """The DeNS backbone comes with DeNS energy and force heads (the force head holds the denoising block),
    and the DeNS energy and force heads with the DeNS backbone."""
    for head in ("energy", "forces"):
        if head not in heads:
            continue
        module = (heads[head] or {}).get("module")
        if (module in _DENS_HEADS[head]) != dens:
            need = "a DeNS head" if dens else "the DeNS backbone"
            raise ConversionError(f"config.model.heads.{head}.module={module!r}: this configuration needs {need}")


def _model_config(config: Mapping[str, Any]) -> tuple[str, dict[str, Any], bool, dict[str, Any] | None, bool]:
    """``(family, fairchem model attributes, hydra layout?, stress head arguments, DeNS?)`` from a checkpoint's
    ``config``."""
    model = config.get("model")
    stress = None
    if isinstance(model, str):
        name, attributes, hydra = model, dict(config.get("model_attributes") or {}), False
    elif isinstance(model, Mapping) and model.get("name") == "hydra":
        backbone = dict(model.get("backbone") or {})
        name, attributes, hydra = backbone.pop("model", None), backbone, True
        heads = model.get("heads") or {}
        unknown = sorted(set(heads) - set(_HEADS))
        if unknown:
            raise ConversionError(
                f"config.model.heads: zoo converts the energy, forces and stress heads, not {unknown}"
            )
        reduce = (heads.get("energy") or {}).get("reduce", "sum")
        if reduce != "sum":
            raise ConversionError(f"config.model.heads.energy.reduce={reduce!r}: zoo converts only 'sum'")
        if "stress" in heads:
            stress = _stress_head(heads["stress"] or {}, name in _DENS_BACKBONES)
        if name in _FAMILIES:
            _check_dens_heads(heads, name in _DENS_BACKBONES)
    elif isinstance(model, Mapping):
        attributes = dict(model)
        name, hydra = attributes.pop("name", None), False
    else:
        raise ConversionError(f"config.model must be a name or a mapping, got {type(model).__name__}")
    if name not in _FAMILIES:
        raise ConversionError(f"config.model: {name!r} is not an eSCN or EquiformerV2 model ({sorted(_FAMILIES)})")
    if stress is not None and _FAMILIES[name] != "equiformer_v2":
        raise ConversionError(f"config.model.heads.stress: zoo converts a stress head on EquiformerV2 only, not {name}")
    if name in _DENS_BACKBONES and not hydra:
        raise ConversionError(f"config.model: {name!r} comes as a backbone with heads (hydra layout) only")
    return _FAMILIES[name], attributes, hydra, stress, name in _DENS_BACKBONES


def model_args(family: str, attributes: Mapping[str, Any], *, dens: bool = False) -> dict[str, Any]:
    """zoo constructor arguments from fairchem's model attributes (defaults are fairchem's where absent).

    ``dens``: the attributes are those of ``EqV2DeNSBackbone``; its denoising switches (``use_force_encoding``,
    ``use_denoising_energy``, ``use_denoising_stress``) act in training only, ``use_noise_schedule_sigma_encoding``
    adds a parameter.
    """
    lmax_list, mmax_list = attributes.get("lmax_list", [6]), attributes.get("mmax_list", [2])
    if len(lmax_list) != 1 or len(mmax_list) != 1:
        raise ConversionError(f"lmax_list/mmax_list {lmax_list}/{mmax_list}: zoo supports one resolution only")
    args: dict[str, Any] = {"lmax": int(lmax_list[0]), "mmax": int(mmax_list[0])}
    if family == "equiformer_v2":
        for key, supported in _EQV2_UNSUPPORTED.items():
            if key in attributes and attributes[key] != supported:
                raise ConversionError(
                    f"model attribute {key}={attributes[key]!r} is not supported (only {supported!r})"
                )
        args.update({k: attributes[k] for k in _EQV2_ARGS if attributes.get(k) is not None})
        if dens:
            args.update(dens=True, dens_sigma_encoding=bool(attributes.get("use_noise_schedule_sigma_encoding", False)))
    else:
        if attributes.get("distance_function", "gaussian") != "gaussian":
            raise ConversionError(f"distance_function={attributes['distance_function']!r}: only 'gaussian'")
        args.update({k: attributes.get(k, default) for k, default in _ESCN_DEFAULTS.items()})
    return args


def _strip_key(key: str) -> str:
    """Remove zero, one or two leading ``module.`` (DataParallel / DistributedDataParallel wrappers)."""
    return key.removeprefix("module.").removeprefix("module.")


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """:func:`_strip_key` applied to every key."""
    return {_strip_key(key): value for key, value in state_dict.items()}


def _monolithic_name(key: str) -> str:
    """Hydra names -> monolithic names: ``backbone.x`` -> ``x``, ``output_heads.energy.energy_block.x`` -> ..."""
    if key.startswith("backbone."):
        return key.removeprefix("backbone.")
    match = re.match(r"output_heads\.(\w+)\.(.*)$", key)
    if match:
        head, rest = match.groups()
        if head not in _HEADS:
            raise ConversionError(f"state_dict key {key!r}: head {head!r} is not supported ({', '.join(_HEADS)})")
        for dens_block, block in _HEAD_BLOCKS.items():
            if rest.startswith(dens_block):
                rest = block + rest.removeprefix(dens_block)
        return _HEADS[head] + rest
    return key


def convert_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """fairchem state dict (any wrapper prefix, monolithic or hydra) -> ``model``'s state dict.

    Derived constants are dropped; keys already in zoo's naming pass through unchanged. Entries the model
    has but the checkpoint lacks are left for ``load_state_dict(strict=True)`` to report.
    """
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in _strip_prefix(state_dict).items():
        name = _monolithic_name(key)
        if name in expected:
            out[name] = value
        elif not DERIVED.search(name) and not FROZEN.search(name):
            raise ConversionError(f"state_dict key {key!r} has no counterpart in zoo's {type(model).__name__}")
    return out


def _ema_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The checkpoint's state dict with every trainable parameter replaced by its EMA shadow.

    The shadow parameters follow ``model.parameters()`` over ``requires_grad`` parameters, which is the order
    of the parameter entries of the state dict (buffers and frozen parameters skipped).
    """
    ema = checkpoint.get("ema")
    if not ema or not ema.get("shadow_params"):
        raise ConversionError("use_ema=True but the checkpoint has no EMA shadow parameters")
    state = dict(checkpoint["state_dict"])
    buffers = ("distance_expansion.offset",)  # the one non-derived buffer
    trainable = [
        k
        for k in state
        if not DERIVED.search(_strip_key(k)) and not FROZEN.search(_strip_key(k)) and not k.endswith(buffers)
    ]
    shadows = list(ema["shadow_params"])
    if len(shadows) != len(trainable):
        raise ConversionError(
            f"the EMA holds {len(shadows)} tensors but the state dict has {len(trainable)} trainable parameters"
        )
    for key, shadow in zip(trainable, shadows, strict=True):
        if shadow.shape != state[key].shape:
            raise ConversionError(
                f"EMA tensor for {key!r} has shape {tuple(shadow.shape)}, not {tuple(state[key].shape)}"
            )
        state[key] = shadow
    return state


def _normaliser(normalizers: Mapping[str, Any], new: str, old: str) -> tuple[float, float]:
    """``(mean, std)`` of one target; new-style ``{mean, rmsd}`` or old-style ``{mean, std}``."""
    entry = normalizers.get(new, normalizers.get(old))
    if entry is None:
        return 0.0, 1.0
    std = entry.get("rmsd", entry.get("std", 1.0))
    return float(torch.as_tensor(entry.get("mean", 0.0))), float(torch.as_tensor(std))


def _references(
    checkpoint: Mapping[str, Any], state: Mapping[str, Tensor], use_lin_ref: bool, energy_std: float, size: int
) -> Tensor | None:
    """Per-element energies in eV: linear references times the energy std, plus element references."""
    total = None
    lin_ref = next((v for k, v in _strip_prefix(state).items() if k.endswith("energy_lin_ref")), None)
    if use_lin_ref:
        if lin_ref is None:
            raise ConversionError("use_energy_lin_ref is set but the state dict has no energy_lin_ref")
        total = lin_ref.double()[:size] * energy_std
    element_refs = (checkpoint.get("elementrefs") or {}).get("energy")
    if element_refs is not None:
        refs = torch.as_tensor(element_refs["element_references"]).double()  # atomic numbers >= size cannot occur
        refs = torch.nn.functional.pad(refs[:size], (0, max(0, size - len(refs))))
        total = refs if total is None else total + refs
    return total


@register_converter("fairchem")
def convert_fairchem(
    path: str | Path, *, use_ema: bool = False, use_energy_lin_ref: bool | None = None, **overrides: Any
) -> nn.Module:
    """Convert a fairchem 1.x eSCN or EquiformerV2 checkpoint file into a zoo model (float32, eval mode).

    Args:
        path: the ``.pt`` file.
        use_ema: predict with the EMA shadow weights (fairchem's ``main.py --mode predict``) instead of the
            plain ``state_dict`` weights (fairchem's ASE calculator, the default).
        use_energy_lin_ref: add the checkpoint's linear energy references (``energy_lin_ref``); default: the
            checkpoint's own ``use_energy_lin_ref``.
        **overrides: zoo constructor arguments to override (e.g. ``edge_frame="random"``).

    Returns:
        The model, built by :func:`zoo.create_model` (architecture ``equiformer_v2`` or ``escn``) with the
        weights loaded ``strict=True`` and ``metadata["source"]`` describing the conversion.
    """
    checkpoint = load_checkpoint(path)
    family, attributes, hydra, stress, dens = _model_config(checkpoint["config"])
    args = model_args(family, attributes, dens=dens)
    normalizers = checkpoint.get("normalizers") or {}
    energy_mean, energy_std = _normaliser(normalizers, "energy", "target")
    forces_mean, forces_std = _normaliser(normalizers, "forces", "grad_target")
    args.update(energy_mean=energy_mean, energy_std=energy_std, forces_mean=forces_mean, forces_std=forces_std)
    if stress is not None:
        isotropic_mean, isotropic_std = _normaliser(normalizers, "stress_isotropic", "stress_isotropic")
        anisotropic_mean, anisotropic_std = _normaliser(normalizers, "stress_anisotropic", "stress_anisotropic")
        args["stress_head"] = dict(
            stress,
            isotropic_mean=isotropic_mean,
            isotropic_std=isotropic_std,
            anisotropic_mean=anisotropic_mean,
            anisotropic_std=anisotropic_std,
        )
    state = _ema_state_dict(checkpoint) if use_ema else dict(checkpoint["state_dict"])
    lin_ref = attributes.get("use_energy_lin_ref", False) if use_energy_lin_ref is None else use_energy_lin_ref
    size = int(args.get("max_num_elements", 90))
    references = _references(checkpoint, state, bool(lin_ref), energy_std, size)
    args["use_element_references"] = references is not None
    args.update(overrides)
    model = create_model(family, **args)
    converted = convert_state_dict(state, model)
    if references is not None:
        converted["energy_references"] = references.to(torch.float32)
    model.load_state_dict(converted, strict=True)
    if not getattr(model, "regress_forces", True):  # energy only (IS2RE "direct"): not an interatomic potential
        model.metadata["task"] = "property"
        model.metadata.pop("force_mode", None)
        model.metadata["units"] = {k: v for k, v in model.metadata.get("units", {}).items() if k != "forces"}
    model.metadata["source"] = {
        "format": "fairchem",
        "layout": "hydra" if hydra else "monolithic",
        "weights": "ema" if use_ema else "state_dict",
    }
    return model.eval()
