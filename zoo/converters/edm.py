"""Official EDM checkpoints (ehoogeboom/e3_diffusion_for_molecules) -> :class:`zoo.models.edm.EDM`.

A released model is a folder with ``generative_model_ema.npy`` (despite the name, a torch state dict written
by ``torch.save``) and ``args.pickle`` (the training ``argparse.Namespace``). The state dict is read with
``torch.load(weights_only=True)``; ``args.pickle`` with :func:`load_args`, a restricted unpickler that builds
plain containers and turns ``argparse.Namespace`` into a dict, and refuses every other object. The model
configuration follows ``qm9/models.py:get_model``; a missing ``aggregation_method`` means ``"sum"``, as the
official ``eval_sample.py`` sets it.

Example:
    >>> from zoo.converters.edm import model_args_from_official
    >>> model_args_from_official({"dataset": "qm9", "remove_h": False, "nf": 256, "n_layers": 9})["species"]
    [1, 6, 7, 8, 9]
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo.converters import register_converter
from zoo.models.edm import QM9_N_NODES, checkpoint_filter_fn
from zoo.registry import create_model

__all__ = ["convert_edm", "load_args", "model_args_from_official"]

# Official ``configs/datasets_config.py``: atom types (one-hot order) and, where zoo ships it, the histogram
# of atoms per molecule.
_SYMBOL_TO_Z = {"H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9, "Al": 13, "Si": 14, "P": 15, "S": 16, "Cl": 17,
                "As": 33, "Br": 35, "I": 53, "Hg": 80, "Bi": 83}  # fmt: skip
_GEOM_DECODER = ["H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl", "As", "Br", "I", "Hg", "Bi"]
_QM9_SECOND_HALF_N_NODES = {
    19: 6944, 12: 845, 20: 4794, 21: 4962, 27: 132, 25: 754, 18: 6695, 14: 2587, 15: 3865, 22: 1701, 17: 6461,
    16: 5344, 23: 2380, 13: 1541, 24: 267, 10: 178, 7: 7, 11: 412, 8: 25, 9: 62, 29: 15, 26: 17, 4: 3, 3: 1, 6: 5,
    5: 3,
}  # fmt: skip
_DATASETS: dict[tuple[str, bool], tuple[list[str], dict[int, int] | None]] = {
    ("qm9", False): (["H", "C", "N", "O", "F"], QM9_N_NODES),
    ("qm9", True): (["C", "N", "O", "F"], {9: 83366, 8: 13625, 7: 2404, 6: 475, 5: 91, 4: 25, 3: 7, 1: 2, 2: 5}),
    ("qm9_second_half", False): (["H", "C", "N", "O", "F"], _QM9_SECOND_HALF_N_NODES),
    ("geom", False): (_GEOM_DECODER, None),
    ("geom", True): (_GEOM_DECODER[1:], None),
}


class _Namespace:
    """Stand-in for ``argparse.Namespace`` while unpickling: keeps only its attribute dict."""

    def __init__(self, **kwargs: Any) -> None:
        self.attributes: dict[str, Any] = dict(kwargs)

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.attributes = dict(state)


class _ArgsUnpickler(pickle.Unpickler):
    """Unpickler that resolves exactly one global, ``argparse.Namespace``; any other raises."""

    def find_class(self, module: str, name: str) -> type:
        if (module, name) == ("argparse", "Namespace"):
            return _Namespace
        raise pickle.UnpicklingError(
            f"args.pickle refers to {module}.{name}; only argparse.Namespace and plain containers are allowed"
        )


def _plain(value: Any) -> Any:
    """Namespaces -> dicts, recursively; anything else as is."""
    if isinstance(value, _Namespace):
        return {key: _plain(item) for key, item in value.attributes.items()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def load_args(path: str | Path) -> dict[str, Any]:
    """The training arguments in an official ``args.pickle``, as a plain dict (restricted unpickling)."""
    data = Path(path).read_bytes()
    args = _plain(_ArgsUnpickler(io.BytesIO(data)).load())
    if not isinstance(args, dict):
        raise ValueError(f"{path} does not hold an argparse.Namespace (got {type(args).__name__})")
    return args


def model_args_from_official(args: Mapping[str, Any], n_nodes: Mapping[int, int] | None = None) -> dict[str, Any]:
    """The :class:`~zoo.models.edm.EDM` constructor arguments of official training ``args``.

    Args:
        args: the official arguments (as :func:`load_args` returns them); missing ones take the official
            defaults of ``main_qm9.py``.
        n_nodes: histogram of atoms per molecule; needed for datasets whose histogram zoo does not ship (GEOM).
    """
    if args.get("model", "egnn_dynamics") != "egnn_dynamics":
        raise ValueError(f"only model='egnn_dynamics' is supported, got {args.get('model')!r}")
    if args.get("probabilistic_model", "diffusion") != "diffusion":
        raise ValueError(f"only probabilistic_model='diffusion' is supported, got {args.get('probabilistic_model')!r}")
    key = (str(args.get("dataset", "qm9")), bool(args.get("remove_h", False)))
    if key not in _DATASETS:
        raise ValueError(f"unknown official dataset {key[0]!r} (remove_h={key[1]}); known: {sorted(set(_DATASETS))}")
    decoder, histogram = _DATASETS[key]
    histogram = histogram if n_nodes is None else n_nodes
    if histogram is None:
        raise ValueError(f"zoo ships no atom-count histogram for {key[0]!r}: pass n_nodes={{size: count}}")
    return {
        "species": [_SYMBOL_TO_Z[s] for s in decoder],
        "include_charges": bool(args.get("include_charges", True)),
        "context_nf": int(args.get("context_node_nf", 0)),
        "hidden_nf": int(args.get("nf", 128)),
        "n_layers": int(args.get("n_layers", 6)),
        "inv_sublayers": int(args.get("inv_sublayers", 1)),
        "attention": bool(args.get("attention", True)),
        "tanh": bool(args.get("tanh", True)),
        "norm_constant": float(args.get("norm_constant", 1)),
        "sin_embedding": bool(args.get("sin_embedding", False)),
        "normalization_factor": float(args.get("normalization_factor", 1)),
        "aggregation_method": str(args.get("aggregation_method", "sum")),
        "condition_time": bool(args.get("condition_time", True)),
        "timesteps": int(args.get("diffusion_steps", 500)),
        "noise_schedule": str(args.get("diffusion_noise_schedule", "polynomial_2")),
        "noise_precision": float(args.get("diffusion_noise_precision", 1e-5)),
        "loss_type": str(args.get("diffusion_loss_type", "l2")),
        "norm_values": [float(v) for v in args.get("normalize_factors", [1, 4, 1])],
        "n_nodes": {int(k): int(v) for k, v in histogram.items()},
    }


@register_converter("edm")
def convert_edm(
    path: Path,
    *,
    args: Mapping[str, Any] | None = None,
    args_path: str | Path | None = None,
    n_nodes: Mapping[int, int] | None = None,
) -> torch.nn.Module:
    """Official ``generative_model*.npy`` -> EDM model with the weights loaded (``strict=True``).

    Args:
        path: the state dict file.
        args: the official training arguments (a card can carry them inline).
        args_path: an ``args.pickle``; by default the one beside ``path`` when ``args`` is not given.
        n_nodes: atom-count histogram for datasets zoo has none for.
    """
    path = Path(path)
    if args is None:
        args = load_args(args_path if args_path is not None else path.parent / "args.pickle")
    model_args = model_args_from_official(args, n_nodes)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model("edm", **model_args)
    model.load_state_dict(checkpoint_filter_fn(state_dict, model), strict=True)
    model.metadata.update({"upstream": "ehoogeboom/e3_diffusion_for_molecules", "dataset": args.get("dataset")})
    return model.eval()
