"""Peak memory and time of energy + forces with and without edge chunking, on a ~10k-atom crystal.

    python -m benchmarks.chunked_memory                      # 10,192 Cu atoms, EGNN potential, hidden 256
    python -m benchmarks.chunked_memory --hidden 128 --chunk 4096 --repeat 14 14 13
    python -m benchmarks.chunked_memory --model equiformer_v2 --runs 1   # 32 channels, lmax 4, mmax 2
    python -m benchmarks.chunked_memory --model escn --runs 1

The model (``--model``, random weights: memory and time do not depend on them) is an ``egnn-potential`` with
wide hidden features (``--hidden``; energy, per-atom energies and conservative forces by autograd), or a small
``equiformer_v2`` or ``escn`` (``--hidden`` channels everywhere, ``--lmax``, ``--mmax``, direct forces, the
neighbour list capped at their ``max_neighbors`` of 20). The call measured is what the ASE calculator runs,
``model(graph)`` with gradients recorded (``--no-grad``: under ``torch.no_grad``, inference of a direct-force
model), once with all edges at once and once with ``set_edge_chunk_size(--chunk)`` (:mod:`zoo.nn.chunking`).
Each mode runs in a fresh process (``--worker``) so that one does not inherit the other's heap; glibc is told
to return every allocation above 128 KiB to the system (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave
the resident set. Measured per mode:

- ``torch peak``: the largest total of live tensor bytes during one call, from torch's CPU memory profiler
  (``torch.profiler.profile(profile_memory=True)``, the running sum of its allocation and free events).
  ``tracemalloc`` cannot see these: torch allocates tensors outside Python's allocator.
- ``RSS peak``: the rise of the process's resident high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) over the resident size before the timed calls, Linux only.
- ``time``: median wall-clock time of ``--runs`` calls after one warm-up call, without the profiler, and the
  median CPU time of this process over the same calls (``time.process_time``: user + system, page faults
  included), which a machine shared with other jobs disturbs less.

Printed: both modes and the ratios chunked / unchunked, and the largest energy and force differences.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HWM_RESET = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A ``Vm*`` field of ``/proc/self/status`` in KiB (``None`` off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _torch_peak_bytes(call) -> int:
    """Largest total of live tensor bytes allocated during ``call()``, from torch's CPU memory profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted(
        (event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"),
        key=lambda event: event.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """The ``--model`` potential with random weights."""
    import zoo

    width = args.hidden
    if args.model == "egnn":
        return zoo.create_model(
            "egnn-potential", hidden_nf=width, n_layers=args.layers, cutoff=args.cutoff, elements=[29]
        )
    if args.model == "equiformer_v2":
        heads = 4
        return zoo.create_model(
            "equiformer_v2",
            num_layers=args.layers,
            sphere_channels=width,
            attn_hidden_channels=width,
            num_heads=heads,
            attn_alpha_channels=width // heads,
            attn_value_channels=width // heads,
            ffn_hidden_channels=width,
            edge_channels=width,
            lmax=args.lmax,
            mmax=args.mmax,
            max_radius=args.cutoff,
        )
    return zoo.create_model(
        "escn",
        num_layers=args.layers,
        sphere_channels=width,
        hidden_channels=width,
        edge_channels=width,
        lmax=args.lmax,
        mmax=args.mmax,
        cutoff=args.cutoff,
    )


def worker(args: argparse.Namespace) -> dict:
    """One mode in this process: build the crystal and the model, measure, return a JSON-able dict."""
    from ase.build import bulk

    from zoo.graph import from_ase, radius_graph

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = build_model(args).to(dtype).eval()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(tuple(args.repeat))
    atoms.rattle(0.02, seed=0)
    graph = radius_graph(from_ase(atoms, dtype=dtype), args.cutoff, max_neighbors=model.metadata.get("max_neighbors"))
    model.set_edge_chunk_size(args.chunk if args.worker == "chunked" else None)

    def call() -> dict:
        if args.no_grad:
            with torch.no_grad():
                return model(graph)
        return model(graph)

    out = call()  # warm-up
    energy, forces = float(out["energy"][0]), out["forces"].detach().double()
    del out
    rss_peak = before = None
    if HWM_RESET.exists():
        HWM_RESET.write_text("5")  # resets VmHWM to the current resident size
        before = _status_kib("VmRSS")
    times, cpu_times = [], []
    for _ in range(args.runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if before is not None:
        rss_peak = (_status_kib("VmHWM") - before) * 1024
    torch_peak = _torch_peak_bytes(call)
    forces_path = Path(args.forces_out)
    torch.save(forces, forces_path)
    return {
        "atoms": len(atoms),
        "edges": int(graph.edge_index.shape[1]),
        "energy": energy,
        "time_s": statistics.median(times),
        "cpu_time_s": statistics.median(cpu_times),
        "torch_peak_bytes": torch_peak,
        "rss_peak_bytes": rss_peak,
    }


def run_mode(mode: str, argv: list[str], forces_out: Path) -> dict:
    """Run ``worker`` for ``mode`` in a fresh interpreter and return its result."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [
        sys.executable,
        "-m",
        "benchmarks.chunked_memory",
        *argv,
        "--worker",
        mode,
        "--forces-out",
        str(forces_out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["egnn", "equiformer_v2", "escn"], default="egnn")
    parser.add_argument("--repeat", type=int, nargs=3, default=[14, 14, 13], help="fcc Cu supercell (4 atoms each)")
    parser.add_argument(
        "--cutoff", type=float, help="Å (default 4.0 for egnn: 18 neighbours per atom; 5.0, capped at 20, otherwise)"
    )
    parser.add_argument("--hidden", type=int, help="hidden_nf of egnn (default 256), channels of the others (32)")
    parser.add_argument("--lmax", type=int, default=4, help="equiformer_v2 and escn")
    parser.add_argument("--mmax", type=int, default=2, help="equiformer_v2 and escn")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--no-grad", action="store_true", help="run under torch.no_grad (direct-force models)")
    parser.add_argument("--chunk", type=int, default=8192, help="edges per chunk in the chunked mode")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per mode (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--worker", choices=["unchunked", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--forces-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cutoff is None:
        args.cutoff = 4.0 if args.model == "egnn" else 5.0
    if args.hidden is None:
        args.hidden = 256 if args.model == "egnn" else 32
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        paths = {mode: Path(folder) / f"{mode}.pt" for mode in ("unchunked", "chunked")}
        results = {mode: run_mode(mode, argv, path) for mode, path in paths.items()}
        force_difference = float((torch.load(paths["chunked"]) - torch.load(paths["unchunked"])).abs().max())
    plain, chunked = results["unchunked"], results["chunked"]
    if args.model == "egnn":
        described = f"egnn-potential hidden {args.hidden}"
    else:
        described = f"{args.model} {args.hidden} channels, lmax {args.lmax}, mmax {args.mmax}"
    gradients = "no gradients" if args.no_grad else "gradients recorded"
    print(
        f"{plain['atoms']} atoms, {plain['edges']} edges, {described} x {args.layers} layers, "
        f"{args.dtype}, {args.threads} thread(s), {gradients}; chunk = {args.chunk} edges; energy + forces per call"
    )
    mib = 2**20
    rows = [("torch peak (MiB)", "torch_peak_bytes", mib), ("RSS peak (MiB)", "rss_peak_bytes", mib)]
    rows += [("wall time (s)", "time_s", 1), ("CPU time (s)", "cpu_time_s", 1)]
    print(f"{'':18s} {'unchunked':>11s} {'chunked':>11s} {'chunked/unchunked':>18s}")
    for label, key, unit in rows:
        if plain[key] is None or chunked[key] is None:
            continue
        print(f"{label:18s} {plain[key] / unit:11.2f} {chunked[key] / unit:11.2f} {chunked[key] / plain[key]:18.3f}")
    print(f"max |dE| = {abs(chunked['energy'] - plain['energy']):.3g} eV, max |dF| = {force_difference:.3g} eV/Å")


if __name__ == "__main__":
    main()
