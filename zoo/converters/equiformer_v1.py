"""Official Equiformer (v1) checkpoints (atomicarchitects/equiformer, OC20 IS2RE) -> zoo models.

The OC20 trainer saves ``torch.save({"state_dict", "normalizers", "config", "optimizer", ...})`` (opened here
with ``torch.load(weights_only=True)`` only). The Dropbox folders of the two released IS2RE models download as
a zip archive of the run directory; the checkpoint inside (``best_checkpoint.pt`` by default) is read from it.
The conversion:

1. reads the model configuration from ``config["model"]`` (the official YAML's ``model:`` block, name
   ``graph_attention_transformer``), or from ``converter_args: {config: ...}`` when the file has none, and
   maps it to :class:`zoo.models.equiformer_v1.EquiformerV1` arguments, refusing options zoo does not
   implement (node attributes, atom-type edge attributes, the attention head, dropout on projections);
2. remaps the state dict (:func:`convert_state_dict`): strips zero to two ``module.`` prefixes
   (``DistributedDataParallel`` around ``OCPDataParallel``), renames ``<layer>.tp.weight`` -> ``<layer>.weight``
   and concatenates the bias list ``<layer>.bias.<k>`` -> ``<layer>.bias``, moves each FFN's gate
   (``ffn.fctp_1.gate``) out of the linear map, and drops what e3nn builds itself and zoo rebuilds: the
   ``output_mask`` and ``_compiled_main_left_right._w3j_*`` buffers (their names and presence differ between
   e3nn versions) and the empty ``weight`` of tensor products without internal weights;
3. carries the normaliser into the model (energies ``out * std + mean``, eV; the auxiliary head's
   displacements ``out * std``, Å);
4. loads with ``strict=True``.

Example:
    >>> from zoo.converters import get_converter
    >>> get_converter("equiformer_v1").__name__
    'convert_equiformer_v1'
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.converters import register_converter
from zoo.registry import create_model

__all__ = ["ConversionError", "convert_equiformer_v1", "convert_state_dict", "load_checkpoint", "model_args"]

# Built by e3nn at construction (zoo computes its Clebsch-Gordan coefficients instead).
E3NN_INTERNAL = re.compile(r"(^|\.)(output_mask|_compiled_main_left_right\.[^.]+)$")
_BIAS_LIST = re.compile(r"^(.*)\.bias\.(\d+)$")

# Official model attribute -> (zoo argument, default of the official constructor).
_ARGS = {
    "irreps_node_embedding": ("irreps_node_embedding", "256x0e+128x1e"),
    "num_layers": ("num_layers", 6),
    "irreps_sh": ("irreps_sh", "1x0e+1x1e"),
    "max_radius": ("max_radius", 6.0),
    "number_of_basis": ("number_of_basis", 128),
    "fc_neurons": ("fc_neurons", [64, 64]),
    "irreps_feature": ("irreps_feature", "512x0e"),
    "irreps_head": ("irreps_head", "32x0e+16x1e"),
    "num_heads": ("num_heads", 8),
    "irreps_pre_attn": ("irreps_pre_attn", None),
    "rescale_degree": ("rescale_degree", False),
    "nonlinear_message": ("nonlinear_message", False),
    "irreps_mlp_mid": ("irreps_mlp_mid", "768x0e+384x1e"),
    "alpha_drop": ("alpha_drop", 0.2),
    "drop_path_rate": ("drop_path_rate", 0.0),
    "use_auxiliary_task": ("auxiliary_head", False),
    "max_neighbors": ("max_neighbors", 50),
}
# Official options zoo implements only with these values.
_UNSUPPORTED = {
    "use_node_attr": False,
    "irreps_node_attr": "1x0e",
    "use_atom_edge_attr": False,
    "use_attention_head": False,
    "norm_layer": "layer",
    "proj_drop": 0.0,
    "out_drop": 0.0,
    "use_pbc": True,
}
_IGNORED = {"name", "otf_graph", "irreps_atom_edge_attr", "auxiliary_head_dropout", "num_atoms", "bond_feat_dim"}


class ConversionError(ValueError):
    """An Equiformer checkpoint zoo cannot convert; the message says which field and why."""


def load_checkpoint(path: str | Path, checkpoint_name: str = "best_checkpoint.pt") -> dict[str, Any]:
    """Open an official checkpoint (or the zip of its run directory) with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if Path(n).name == checkpoint_name]
            if len(members) > 1:
                raise ConversionError(f"{path} holds several {checkpoint_name}: {members}")
            if members:
                with tempfile.TemporaryDirectory() as folder:
                    return load_checkpoint(archive.extract(members[0], folder))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises UnpicklingError, RuntimeError or EOFError
        raise ConversionError(
            f"{path} could not be opened as an Equiformer checkpoint with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ConversionError(f"{path} is not an Equiformer checkpoint (a dict with a 'state_dict')")
    return checkpoint


def model_args(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """zoo :class:`~zoo.models.equiformer_v1.EquiformerV1` arguments for the official OC20 model attributes."""
    name = attributes.get("name", "graph_attention_transformer")
    if name != "graph_attention_transformer":
        raise ConversionError(f"config.model.name={name!r}: only 'graph_attention_transformer' is converted")
    for key, supported in _UNSUPPORTED.items():
        if key in attributes and attributes[key] != supported:
            raise ConversionError(f"model attribute {key}={attributes[key]!r} is not supported (only {supported!r})")
    unknown = sorted(set(attributes) - set(_ARGS) - set(_UNSUPPORTED) - _IGNORED)
    if unknown:
        raise ConversionError(f"model attributes {unknown} are not known to the converter")
    args = {zoo_name: attributes.get(key, default) for key, (zoo_name, default) in _ARGS.items()}
    args["fc_neurons"] = list(args["fc_neurons"])
    return args


def _strip_key(key: str) -> str:
    """Remove zero, one or two leading ``module.`` (DataParallel / DistributedDataParallel wrappers)."""
    return key.removeprefix("module.").removeprefix("module.")


def _zoo_name(key: str) -> str:
    """Official parameter name -> zoo's (``x.tp.weight`` -> ``x.weight``, the FFN gate out of ``fctp_1``)."""
    key = key.replace(".ffn.fctp_1.gate.", ".ffn.gate.")
    return key[: -len(".tp.weight")] + ".weight" if key.endswith(".tp.weight") else key


def convert_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Official state dict (any ``module.`` prefix) -> ``model``'s state dict; already converted keys pass through.

    e3nn internals and empty weights are dropped; any other entry the model lacks raises. Entries the model
    has but the checkpoint lacks are left for ``load_state_dict(strict=True)`` to report.
    """
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    biases: dict[str, dict[int, Tensor]] = {}
    for key, value in state_dict.items():
        name = _zoo_name(_strip_key(key))
        if E3NN_INTERNAL.search(name):
            continue
        match = _BIAS_LIST.match(name)
        if match and f"{match.group(1)}.bias" in expected:
            biases.setdefault(f"{match.group(1)}.bias", {})[int(match.group(2))] = value
        elif name in expected:
            out[name] = value
        elif value.numel() == 0 and name.endswith(".weight"):
            continue  # a tensor product whose weights come from a radial MLP, or a gate's product
        else:
            raise ConversionError(f"state_dict key {key!r} has no counterpart in zoo's {type(model).__name__}")
    for name, parts in biases.items():
        out[name] = torch.cat([parts[k] for k in sorted(parts)])
    return out


def _normaliser(normalizers: Mapping[str, Any], key: str) -> tuple[Tensor, Tensor] | None:
    entry = normalizers.get(key)
    if entry is None:
        return None
    return torch.as_tensor(entry["mean"]).double(), torch.as_tensor(entry["std"]).double()


@register_converter("equiformer_v1")
def convert_equiformer_v1(
    path: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    checkpoint_name: str = "best_checkpoint.pt",
    **overrides: Any,
) -> nn.Module:
    """Convert an official Equiformer OC20 IS2RE checkpoint into a zoo model (float32, eval mode).

    Args:
        path: the ``.pt`` file, or a zip archive of the run directory holding ``checkpoint_name``.
        config: the model attributes (the official YAML's ``model:`` block) for files without ``config``;
            overrides the file's.
        checkpoint_name: the file to take from a zip archive.
        **overrides: zoo constructor arguments to override.

    Returns:
        An ``equiformer_v1`` model with ``relaxed_energy`` in eV (and ``relaxed_displacement`` in Å with the
        auxiliary head), weights loaded ``strict=True`` and ``metadata["source"]`` describing the conversion.
    """
    checkpoint = load_checkpoint(path, checkpoint_name)
    attributes = config if config is not None else (checkpoint.get("config") or {}).get("model")
    if not isinstance(attributes, Mapping):
        raise ConversionError(f"{path} has no config.model: pass converter_args={{'config': <the model block>}}")
    args = model_args(attributes)
    normalizers = checkpoint.get("normalizers") or {}
    target = _normaliser(normalizers, "target")
    if target is not None:
        args.update(target_mean=float(target[0]), target_std=float(target[1]))
    positions = _normaliser(normalizers, "positions")
    if positions is not None and args["auxiliary_head"]:
        mean, std = positions
        if bool(mean.abs().max() > 0) or bool((std - std.flatten()[0]).abs().max() > 0):
            raise ConversionError(
                f"positions normaliser mean={mean.tolist()}, std={std.tolist()}: zoo needs mean 0, one std"
            )
        args["displacement_std"] = float(std.flatten()[0])
    args.update(overrides)
    variant = "equiformer_v1-oc20-is2re-18l" if args["auxiliary_head"] else "equiformer_v1-oc20-is2re"
    model = create_model(variant, **args)
    model.load_state_dict(convert_state_dict(checkpoint["state_dict"], model), strict=True)
    model.metadata["source"] = {"format": "equiformer_v1", "weights": "state_dict"}
    return model.eval()
