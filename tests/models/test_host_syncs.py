"""Host-device synchronisations per forward pass on the fused kernels do not grow with the number of layers.

On a GPU every read of a device value by the host (``bool(t)``, ``int(t)``, ``.item()``, ``.tolist()``, and
ops whose output size depends on the data: ``bincount``, ``nonzero``, ``unique``, ``repeat_interleave``) drains
the launch queue. The models check their inputs once per forward (a few reads); the layers must add none. This
counts those calls on the CPU, where they are cheap, so it runs everywhere: a model with 4 layers must make as
many as the same model with 2, on its own code and on the fused kernels.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

import pytest
import torch

import zoo
from zoo.graph import batch_graphs
from zoo.kernels import set_backend
from zoo.testing import molecule_graph, slab_graph

TENSOR_READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "unique")
TORCH_READS = ("bincount", "nonzero", "unique", "repeat_interleave", "unique_consecutive")

MODELS = {
    "escn": dict(sphere_channels=8, hidden_channels=8, edge_channels=8, lmax=2, mmax=1, num_sphere_samples=16),
    "equiformer_v2": dict(
        sphere_channels=8, attn_hidden_channels=8, num_heads=2, attn_alpha_channels=4, attn_value_channels=4,
        ffn_hidden_channels=8, lmax=2, mmax=1, edge_channels=8, grid_resolution=8,
    ),
    "egnn-potential": dict(hidden_nf=8, cutoff=4.0, elements=[1, 6, 7, 8, 29]),
}  # fmt: skip
LAYERS = {"escn": "num_layers", "equiformer_v2": "num_layers", "egnn-potential": "n_layers"}


@contextlib.contextmanager
def count_host_reads() -> Iterator[collections.Counter]:
    """Count the calls of :data:`TENSOR_READS` / :data:`TORCH_READS` made from zoo's code inside the block."""
    import traceback

    counts: collections.Counter = collections.Counter()
    patches = contextlib.ExitStack()

    def wrap(owner, name):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            caller = next((f for f in reversed(traceback.extract_stack()[:-1]) if "/zoo/" in f.filename), None)
            if caller is not None and "/tests/" not in caller.filename:
                counts[f"{name} at {caller.filename.rsplit('/zoo/', 1)[-1]}:{caller.lineno}"] += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)
        patches.callback(setattr, owner, name, original)

    with patches:
        for name in TENSOR_READS:
            wrap(torch.Tensor, name)
        for name in TORCH_READS:
            wrap(torch, name)
        yield counts


def _graph(name: str):
    if name == "egnn-potential":
        return batch_graphs([molecule_graph(6, seed=1, cutoff=4.0), slab_graph(cutoff=4.0)])
    return slab_graph(cutoff=5.0)


@pytest.mark.parametrize("backend", [None, "torch"])
@pytest.mark.parametrize("name", list(MODELS))
def test_host_reads_do_not_grow_with_layers(name, backend):
    """Measured: eSCN / EquiformerV2 2 reads on their own code, 5 on the kernels; egnn-potential 1 and 3."""
    reads = {}
    for layers in (2, 4):
        torch.manual_seed(0)
        model = zoo.create_model(name, **MODELS[name], **{LAYERS[name]: layers}).double()
        set_backend(model, backend)
        model(_graph(name))  # warm-up: lazily built buffers
        graph = _graph(name)  # a new graph, as in MD: nothing cached for its edges
        with count_host_reads() as counts:
            out = model(graph)
        assert torch.isfinite(out["energy"]).all()
        reads[layers] = counts
    assert sum(reads[4].values()) == sum(reads[2].values()), (reads[2], reads[4])
    assert sum(reads[4].values()) <= 6, reads[4]
