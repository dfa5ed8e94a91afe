"""Make the EDM golden fixtures ``tests/fixtures/edm/*.safetensors`` with the official code
(ehoogeboom/e3_diffusion_for_molecules, MIT).

The official modules (``egnn/``, ``equivariant_diffusion/``, ``qm9/models.py``) are imported from a checkout
given on the command line; nothing of them is copied into zoo. Each case builds ``EnVariationalDiffusion`` as
``qm9/models.py:get_model`` does from a small ``args``, redraws the dynamics parameters from a seeded normal
distribution (weights N(0, 1/fan_in), biases N(0, 0.01)) so the coordinate updates are not ~1e-3, and runs it in
float64 (the schedule table stays the float32 table of the checkpoints, cast as ``.double()`` casts it) on a padded
batch of 3 molecules (5, 3 and 4 atoms) with the official masks. Every Gaussian draw of the official code is
replaced by a recorded draw from a seeded generator (the raw ``[B, M, 3 + F]`` tensor before masking and
centring) and every ``torch.randint`` by fixed time steps, so that zoo can replay them.

Each file holds: the inputs, the official ``state_dict`` (``weights.*``), the denoiser output on fixed
``z_t``/``t``, the l2 training loss and the VLB (eval) loss per molecule, one full ancestral sampling run, and
the recorded draws (``noise.<phase>.<k>``), with the zoo constructor arguments as JSON in the safetensors
metadata (``golden``). ``schedules.safetensors`` holds the official float32 gamma tables for T = 1000.

Usage::

    mkdir -p /tmp/edm_official
    git -C /work/.mirror/ehoogeboom+e3_diffusion_for_molecules/repo archive HEAD egnn equivariant_diffusion \\
        qm9/models.py qm9/__init__.py | tar -x -C /tmp/edm_official
    python scripts/golden/make_edm_golden.py /tmp/edm_official \\
        --revision $(git -C /work/.mirror/ehoogeboom+e3_diffusion_for_molecules/repo rev-parse HEAD)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "edm"
SIZES = (5, 3, 4)
SPECIES = (1, 6, 7, 8, 9)
T_SMALL = 20

# name -> (official args overrides, zoo constructor arguments)
CASES: dict[str, dict[str, Any]] = {
    "qm9": {
        "nf": 16,
        "n_layers": 2,
        "inv_sublayers": 2,
        "attention": True,
        "tanh": True,
        "norm_constant": 1,
        "sin_embedding": False,
        "normalization_factor": 1,
        "include_charges": True,
        "context_node_nf": 0,
        "diffusion_noise_schedule": "polynomial_2",
        "diffusion_noise_precision": 1e-5,
        "diffusion_loss_type": "l2",
        "normalize_factors": [1, 4, 10],
    },
    "conditional": {
        "nf": 16,
        "n_layers": 2,
        "inv_sublayers": 1,
        "attention": False,
        "tanh": False,
        "norm_constant": 0,
        "sin_embedding": True,
        "normalization_factor": 100,
        "include_charges": False,
        "context_node_nf": 1,
        "diffusion_noise_schedule": "cosine",
        "diffusion_noise_precision": 1e-5,
        "diffusion_loss_type": "l2",
        "normalize_factors": [1, 1, 1],
    },
    "learned": {
        "nf": 16,
        "n_layers": 1,
        "inv_sublayers": 1,
        "attention": True,
        "tanh": True,
        "norm_constant": 1,
        "sin_embedding": False,
        "normalization_factor": 1,
        "include_charges": True,
        "context_node_nf": 0,
        "diffusion_noise_schedule": "learned",
        "diffusion_noise_precision": 1e-5,
        "diffusion_loss_type": "vlb",
        "normalize_factors": [1, 4, 10],
    },
}


def zoo_args(case: dict[str, Any]) -> dict[str, Any]:
    """The zoo ``EDM`` constructor arguments of an official ``args`` case."""
    return {
        "species": list(SPECIES),
        "include_charges": case["include_charges"],
        "context_nf": case["context_node_nf"],
        "hidden_nf": case["nf"],
        "n_layers": case["n_layers"],
        "inv_sublayers": case["inv_sublayers"],
        "attention": case["attention"],
        "tanh": case["tanh"],
        "norm_constant": case["norm_constant"],
        "sin_embedding": case["sin_embedding"],
        "normalization_factor": case["normalization_factor"],
        "timesteps": T_SMALL,
        "noise_schedule": case["diffusion_noise_schedule"],
        "noise_precision": case["diffusion_noise_precision"],
        "loss_type": case["diffusion_loss_type"],
        "norm_values": case["normalize_factors"],
    }


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Redraw every trainable parameter: weights N(0, 1/fan_in), biases N(0, 0.01)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(noise / math.sqrt(param.shape[1]) if param.dim() == 2 else 0.1 * noise)


class Recorder:
    """Replaces ``sample_combined_position_feature_noise``: draws raw ``[B, M, D]`` noise from a seeded generator,
    records it, and masks/centres it as the official code does."""

    def __init__(self, utils: Any, seed: int) -> None:
        self.utils = utils
        self.generator = torch.Generator().manual_seed(seed)
        self.draws: dict[str, list[torch.Tensor]] = {}
        self.phase = ""

    def __call__(self, model: Any, n_samples: int, n_nodes: int, node_mask: torch.Tensor) -> torch.Tensor:
        raw = torch.randn((n_samples, n_nodes, model.n_dims + model.in_node_nf), generator=self.generator)
        self.draws.setdefault(self.phase, []).append(raw.clone())
        masked = raw * node_mask
        z_x = self.utils.remove_mean_with_mask(masked[:, :, : model.n_dims], node_mask)
        return torch.cat([z_x, masked[:, :, model.n_dims :]], dim=2)


@contextlib.contextmanager
def fixed_randint(values: torch.Tensor) -> Iterator[None]:
    """``torch.randint`` returns ``values`` (``[B, 1]``) while active."""
    original = torch.randint
    torch.randint = lambda *args, **kwargs: values.clone()  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.randint = original


def make_case(name: str, case: dict[str, Any], revision: str) -> dict[str, torch.Tensor]:
    from equivariant_diffusion import en_diffusion, utils
    from qm9 import models as qm9_models

    args = SimpleNamespace(
        model="egnn_dynamics",
        probabilistic_model="diffusion",
        condition_time=True,
        aggregation_method="sum",
        diffusion_steps=T_SMALL,
        conditioning=[],
        **case,
    )
    dataset_info = {"n_nodes": {5: 2, 3: 1, 4: 1}, "atom_decoder": ["H", "C", "N", "O", "F"]}
    torch.manual_seed(0)
    model, _, _ = qm9_models.get_model(args, "cpu", dataset_info, None)
    randomise(model.dynamics, seed=1)
    model.double()
    if case["diffusion_noise_schedule"] == "learned":
        # compute_loss casts its time steps with .float(): feed the float64 network float64 times (integer / T
        # rounded to float32 first, a relative change below 1e-7).
        network = model.gamma
        network.forward = lambda t, forward=network.forward: forward(t.double())

    generator = torch.Generator().manual_seed(2)
    batch, size = len(SIZES), max(SIZES)
    node_mask = (torch.arange(size)[None, :] < torch.tensor(SIZES)[:, None]).double()[..., None]
    edge_mask = node_mask.squeeze(2)[:, None, :] * node_mask.squeeze(2)[:, :, None]
    edge_mask = (edge_mask * (1 - torch.eye(size))[None]).reshape(batch * size * size, 1)
    pos = utils.remove_mean_with_mask(torch.randn(batch, size, 3, generator=generator) * 1.2 * node_mask, node_mask)
    types = torch.randint(0, len(SPECIES), (batch, size), generator=generator)
    one_hot = torch.nn.functional.one_hot(types, len(SPECIES)).double() * node_mask
    charges = torch.tensor(SPECIES, dtype=torch.float64)[types][..., None] * node_mask
    h = {"categorical": one_hot, "integer": charges if case["include_charges"] else torch.zeros(0)}
    context = None
    if case["context_node_nf"]:
        context = torch.randn(batch, 1, 1, generator=generator).expand(batch, size, 1) * node_mask

    recorder = Recorder(utils, seed=3)
    en_diffusion.EnVariationalDiffusion.sample_combined_position_feature_noise = (
        lambda self, n_samples, n_nodes, node_mask: recorder(self, n_samples, n_nodes, node_mask)
    )
    out: dict[str, torch.Tensor] = {
        "pos": pos,
        "one_hot": one_hot,
        "charges": charges if case["include_charges"] else torch.zeros(batch, size, 0, dtype=torch.float64),
        "node_mask": node_mask,
    }
    if context is not None:
        out["context"] = context

    # Denoiser on a fixed noisy input.
    z_t = torch.randn(batch, size, 3 + model.in_node_nf, generator=generator) * node_mask
    z_t = torch.cat([utils.remove_mean_with_mask(z_t[..., :3], node_mask), z_t[..., 3:]], dim=2)
    t = torch.rand(batch, 1, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out["denoiser.z_t"], out["denoiser.t"] = z_t, t
        out["denoiser.out"] = model.phi(z_t, t, node_mask, edge_mask, context)

    # Training loss (one molecule at t = 0, which takes the L_0 branch) and the eval VLB.
    t_train = torch.tensor([[0], [7], [T_SMALL]], dtype=torch.float64)
    t_eval = torch.tensor([[1], [5], [T_SMALL]], dtype=torch.float64)
    with torch.no_grad():
        model.train()
        recorder.phase = "train"
        with fixed_randint(t_train):
            out["loss.train"] = model(pos, h, node_mask, edge_mask, context)
        model.eval()
        recorder.phase = "eval"
        with fixed_randint(t_eval):
            out["loss.eval"] = model(pos, h, node_mask, edge_mask, context)
        recorder.phase = "sample"
        x, h_out = model.sample(batch, size, node_mask, edge_mask, context)
    out["loss.t_train"], out["loss.t_eval"] = t_train[:, 0].long(), t_eval[:, 0].long()
    out["sample.x"] = x
    out["sample.one_hot"] = h_out["categorical"].double()
    out["sample.charges"] = h_out["integer"].double() if case["include_charges"] else torch.zeros(batch, size, 0)
    for phase, draws in recorder.draws.items():
        out[f"noise.{phase}"] = torch.stack(draws)
    out.update({f"weights.{k}": v for k, v in model.state_dict().items()})
    tensors = {k: v.detach().contiguous() for k, v in out.items()}
    metadata = {"golden": json.dumps({"zoo_args": zoo_args(case), "revision": revision, "case": name})}
    save_file(tensors, str(OUTPUT / f"{name}.safetensors"), metadata=metadata)
    return tensors


def make_schedules(revision: str) -> None:
    from equivariant_diffusion import en_diffusion

    tables = {
        name: en_diffusion.PredefinedNoiseSchedule(name, timesteps=1000, precision=1e-5).gamma.detach().clone()
        for name in ("polynomial_2", "cosine")
    }
    save_file(tables, str(OUTPUT / "schedules.safetensors"), metadata={"golden": json.dumps({"revision": revision})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="checkout of ehoogeboom/e3_diffusion_for_molecules")
    parser.add_argument("--revision", default="unknown", help="commit of the checkout, recorded in the fixtures")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    make_schedules(args.revision)
    torch.set_default_dtype(torch.float64)
    for name, case in CASES.items():
        tensors = make_case(name, case, args.revision)
        print(name, {k: tuple(v.shape) for k, v in tensors.items() if not k.startswith("weights.")})


if __name__ == "__main__":
    main()
