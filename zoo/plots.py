"""Figures of runs, simulations, samples and benchmarks, written as PNG files.

Every function draws one figure, writes it to ``path`` and returns the data it drew (numpy arrays), so a caller
or a test can check the picture against the numbers. Figures are rendered with matplotlib's Agg canvas on
:class:`matplotlib.figure.Figure` objects: nothing opens a window and the global pyplot state (and backend) of
the caller is left alone. matplotlib and RDKit are imported inside the functions.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "parity.png"
    >>> data = parity([1.0, 2.1, 2.9], [1.0, 2.0, 3.0], path, name="energy", unit="eV")
    >>> round(data["mae"], 3), path.read_bytes()[:8] == PNG_SIGNATURE
    (0.067, True)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PNG_SIGNATURE",
    "bond_length_histograms",
    "bond_lengths",
    "evenly_spaced",
    "learning_curves",
    "md_traces",
    "molecule_grid",
    "parity",
    "ratio_bars",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DPI = 120
_METRIC = re.compile(r"^val_(?P<target>.+)_(?P<metric>mae|rmse)$")


def _figure(width: float, height: float) -> Any:
    """A matplotlib figure drawn by the Agg canvas (no window, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)


def evenly_spaced(count: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``count`` items, evenly spaced, first and last included (all when
    ``count <= limit``): the deterministic subset of a large set that a figure draws.

    Example:
        >>> evenly_spaced(10, 4).tolist(), evenly_spaced(3, 4).tolist()
        ([0, 3, 6, 9], [0, 1, 2])
    """
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(np.int64))


def _log_if_positive(axes: Any, values: Sequence[np.ndarray]) -> None:
    """Logarithmic y axis when every value drawn is positive (losses of diffusion models may be negative)."""
    finite = [v[np.isfinite(v)] for v in values]
    if any(v.size for v in finite) and all((v > 0).all() for v in finite):
        axes.set_yscale("log")


# ------------------------------------------------------------------------------------------------- training
def _number(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)


def learning_curves(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "learning curves"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loss and validation metrics against the optimiser step, log y (where all values are positive).

    Args:
        history: one row per epoch, as ``FitResult.history`` or the rows of ``metrics.csv`` (strings are
            parsed; empty cells skipped): ``step``, ``train_loss``, ``val_loss``, ``val_<target>_mae``,
            ``val_<target>_rmse`` and any other ``val_*`` column.
        path: the PNG file.

    Returns:
        ``{column: (steps, values)}`` of every curve drawn (rows without the column are left out).
    """
    steps = np.array([_number(row.get("step")) for row in history], dtype=np.float64)
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns and key in ("train_loss", "val_loss"))
        columns.extend(key for key in row if key not in columns and key.startswith("val_"))
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in columns:
        values = np.array([_number(row.get(column)) for row in history], dtype=np.float64)
        keep = np.isfinite(values) & np.isfinite(steps)
        if keep.any():
            curves[column] = (steps[keep], values[keep])
    panels: dict[str, list[str]] = {"loss": [c for c in ("train_loss", "val_loss") if c in curves]}
    for column in curves:
        match = _METRIC.match(column)
        if match:
            panels.setdefault(match["target"], []).append(column)
    others = [c for c in curves if not any(c in members for members in panels.values())]
    if others:
        panels["other validation metrics"] = others
    panels = {name: members for name, members in panels.items() if members}
    figure = _figure(4.2 * max(len(panels), 1), 3.6)
    for index, (name, members) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for column in members:
            x, y = curves[column]
            axes.plot(x, y, marker="o", markersize=3, label=column)
        _log_if_positive(axes, [curves[c][1] for c in members])
        axes.set_xlabel("optimiser step")
        axes.set_title(name)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title)
    _save(figure, path)
    return curves


def parity(
    predicted: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    name: str,
    unit: str = "",
    title: str | None = None,
) -> dict[str, Any]:
    """Predicted against reference values with the line :math:`y = x`; MAE and RMSE in the title.

    Args:
        predicted, reference: the same number of values (flattened: forces ``[N, 3]`` give ``3N`` points).
        path: the PNG file.
        name: what the values are (axis labels), ``unit`` their unit.
        title: first line of the title (default ``name``).

    Returns:
        ``{"predicted", "reference"}`` (float64 ``[M]``, the points drawn), ``"mae"``, ``"rmse"``.
    """
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    if predicted.shape != reference.shape or predicted.size == 0:
        raise ValueError(f"parity needs as many predictions as references, got {predicted.size} and {reference.size}")
    error = predicted - reference
    mae, rmse = float(np.abs(error).mean()), float(np.sqrt(np.square(error).mean()))
    suffix = f" ({unit})" if unit else ""
    figure = _figure(4.4, 4.4)
    axes = figure.add_subplot()
    axes.scatter(reference, predicted, s=16 if predicted.size < 1000 else 4, alpha=0.6, linewidths=0, rasterized=True)
    low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
    pad = 0.05 * (high - low) or 1.0
    axes.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.8)
    axes.set_xlim(low - pad, high + pad)
    axes.set_ylim(low - pad, high + pad)
    axes.set_aspect("equal")
    axes.set_xlabel(f"reference {name}{suffix}")
    axes.set_ylabel(f"predicted {name}{suffix}")
    unit_text = f" {unit}" if unit else ""
    axes.set_title(
        f"{title or name}\nMAE {mae:.3g}{unit_text}, RMSE {rmse:.3g}{unit_text}, {predicted.size} values",
        fontsize="medium",
    )
    axes.grid(True, alpha=0.3)
    _save(figure, path)
    return {"predicted": predicted, "reference": reference, "mae": mae, "rmse": rmse}


# ------------------------------------------------------------------------------------------------ dynamics
def md_traces(
    time_fs: Sequence[float] | np.ndarray,
    potential: Sequence[float] | np.ndarray,
    kinetic: Sequence[float] | np.ndarray,
    temperature: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    n_atoms: int = 1,
    target_temperature: float | None = None,
    title: str = "molecular dynamics",
) -> dict[str, np.ndarray]:
    """Energies and temperature of a trajectory against time.

    The left panel shows potential, kinetic and total energy per atom relative to their first value (so the
    exchange between them and the drift of the total are visible at any system size); the right panel the
    temperature, with ``target_temperature`` (a thermostat's) as a dashed line.

    Args:
        time_fs: times in fs; ``potential``, ``kinetic`` energies in eV (whole system); ``temperature`` in K.
        n_atoms: number of atoms (energies are divided by it).

    Returns:
        ``{"time_fs", "potential", "kinetic", "total", "temperature"}`` (eV for the whole system, K), as given.
    """
    data = {
        "time_fs": np.asarray(time_fs, dtype=np.float64),
        "potential": np.asarray(potential, dtype=np.float64),
        "kinetic": np.asarray(kinetic, dtype=np.float64),
        "temperature": np.asarray(temperature, dtype=np.float64),
    }
    if len({v.shape for v in data.values()}) != 1 or data["time_fs"].ndim != 1 or data["time_fs"].size == 0:
        raise ValueError("md_traces needs the same, non-zero number of times, energies and temperatures")
    data["total"] = data["potential"] + data["kinetic"]
    figure = _figure(9.0, 3.6)
    energies, temperatures = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for key in ("potential", "kinetic", "total"):
        values = data[key]
        energies.plot(data["time_fs"], (values - values[0]) / n_atoms, label=key)
    energies.set_xlabel("time (fs)")
    energies.set_ylabel("E - E(0) (eV/atom)")
    energies.set_title("energy")
    energies.legend(fontsize="small")
    energies.grid(True, alpha=0.3)
    temperatures.plot(data["time_fs"], data["temperature"], color="tab:red", label="temperature")
    if target_temperature is not None:
        temperatures.axhline(target_temperature, color="black", linestyle="--", linewidth=0.8, label="target")
    temperatures.set_xlabel("time (fs)")
    temperatures.set_ylabel("T (K)")
    temperatures.set_title("temperature")
    temperatures.legend(fontsize="small")
    temperatures.grid(True, alpha=0.3)
    figure.suptitle(title)
    _save(figure, path)
    return data


# ----------------------------------------------------------------------------------------------- molecules
def molecule_grid(
    molecules: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    bond_inference: str = "edm-table",
    per_row: int = 6,
    max_molecules: int = 48,
    size: int = 220,
) -> dict[str, Any]:
    """2D depictions of the first ``max_molecules`` of ``molecules`` (``ase.Atoms``) in a grid (RDKit).

    Bonds are inferred as in :func:`zoo.metrics.molecules.to_rdkit`. Molecules that sanitise are drawn without
    hydrogens and labelled with their SMILES; the others are drawn with every atom and labelled ``invalid``
    with their formula.

    Returns:
        ``{"legends": [label per drawn molecule], "valid": bool [K], "size": (width, height) of the image}``.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Draw, rdDepictor

    from zoo.metrics.molecules import to_rdkit

    RDLogger.DisableLog("rdApp.*")
    drawn, legends, valid = [], [], []
    for atoms in list(molecules)[:max_molecules]:
        mol = to_rdkit(atoms, bond_inference)  # type: ignore[arg-type]
        if mol is None:
            mol = Chem.Mol()
            ok = False
        else:
            mol = Chem.Mol(mol)
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.RemoveHs(mol)
                ok = True
            except ValueError:
                ok = False
        rdDepictor.Compute2DCoords(mol)
        drawn.append(mol)
        valid.append(ok)
        legends.append(Chem.MolToSmiles(mol) if ok else f"invalid {atoms.get_chemical_formula()}")
    if not drawn:
        raise ValueError("molecule_grid needs at least one molecule")
    image = Draw.MolsToGridImage(
        drawn, molsPerRow=min(per_row, len(drawn)), subImgSize=(size, size), legends=legends, returnPNG=False
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return {"legends": legends, "valid": np.array(valid, dtype=bool), "size": tuple(image.size)}


def _pair_name(symbol_a: str, symbol_b: str) -> str:
    """``"C-C"``, ``"C-H"``, ``"C-O"``, ``"N-H"``, ``"O-H"``: carbon first, hydrogen last, else alphabetical."""
    first, second = sorted((symbol_a, symbol_b), key=lambda s: (s != "C", s == "H", s))
    return f"{first}-{second}"


def bond_lengths(molecules: Sequence[Any]) -> dict[str, np.ndarray]:
    """Lengths (Å) of the bonds inferred with EDM's table in ``molecules`` (``ase.Atoms``), by element pair."""
    from zoo.metrics.molecules import edm_bond_orders

    lengths: dict[str, list[float]] = {}
    for atoms in molecules:
        if len(atoms) < 2:
            continue
        orders = edm_bond_orders(atoms)
        distances = atoms.get_all_distances()
        symbols = atoms.get_chemical_symbols()
        for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
            lengths.setdefault(_pair_name(symbols[i], symbols[j]), []).append(float(distances[i, j]))
    return {pair: np.array(values) for pair, values in lengths.items()}


def bond_length_histograms(
    generated: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    reference: Sequence[Any] | None = None,
    max_pairs: int = 6,
    bins: int = 40,
) -> dict[str, dict[str, np.ndarray]]:
    """Histograms (densities) of bond lengths of generated molecules, against a reference set when given.

    One panel per element pair (the ``max_pairs`` most frequent in the generated molecules, bonds from EDM's
    table as :func:`bond_lengths`). Without ``reference`` the title says that only generated molecules are
    shown.

    Returns:
        ``{pair: {"generated": lengths, "reference": lengths (when given), "bins": bin edges}}`` (Å).
    """
    mine = bond_lengths(generated)
    theirs = bond_lengths(reference) if reference is not None else {}
    pairs = sorted(mine, key=lambda p: (-mine[p].size, p))[:max_pairs]
    data: dict[str, dict[str, np.ndarray]] = {}
    columns = min(3, max(len(pairs), 1))
    rows = max(math.ceil(len(pairs) / columns), 1)
    figure = _figure(3.6 * columns, 2.9 * rows)
    for index, pair in enumerate(pairs):
        axes = figure.add_subplot(rows, columns, index + 1)
        series = {"generated": mine[pair]}
        if reference is not None:
            series["reference"] = theirs.get(pair, np.zeros(0))
        values = np.concatenate(list(series.values()))
        edges = np.linspace(values.min() - 0.05, values.max() + 0.05, bins + 1)
        for label, lengths in series.items():
            if lengths.size:
                axes.hist(lengths, bins=edges, density=True, alpha=0.55, label=f"{label} ({lengths.size})")
        axes.set_title(pair)
        axes.set_xlabel("bond length (Å)")
        axes.legend(fontsize="x-small")
        data[pair] = {**series, "bins": edges}
    if not pairs:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no bonds found", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    count = f"{len(generated)} generated molecules"
    title = (
        f"bond lengths: {count} vs {len(reference)} reference molecules"
        if reference is not None
        else f"bond lengths: {count} only (no reference set given)"
    )
    figure.suptitle(title)
    _save(figure, path)
    return data


# ---------------------------------------------------------------------------------------------- benchmarks
def ratio_bars(
    ratios: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    title: str,
    ylabel: str = "ratio",
) -> dict[str, Any]:
    """Grouped bars of ratios (e.g. peer time / zoo time per workload) with a line at 1.

    Args:
        ratios: ``{group (workload): {series (implementation): ratio}}``; missing entries leave a gap.
        path: the PNG file.

    Returns:
        ``{"groups": [G], "series": [S], "values": float64 [G, S]}`` (NaN where a ratio is missing).
    """
    groups = list(ratios)
    series: list[str] = []
    for values in ratios.values():
        series.extend(name for name in values if name not in series)
    table = np.full((len(groups), len(series)), np.nan)
    for g, group in enumerate(groups):
        for s, name in enumerate(series):
            value = ratios[group].get(name)
            if value is not None:
                table[g, s] = float(value)
    width = 0.8 / max(len(series), 1)
    figure = _figure(max(5.0, 1.0 + 0.35 * len(groups) * max(len(series), 1)), 4.0)
    axes = figure.add_subplot()
    positions = np.arange(len(groups), dtype=np.float64)
    for s, name in enumerate(series):
        offset = (s - (len(series) - 1) / 2) * width
        bars = axes.bar(positions + offset, np.nan_to_num(table[:, s]), width, label=name)
        axes.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in table[:, s]], fontsize=6)
    axes.axhline(1.0, color="black", linewidth=0.8)
    crowded = len(groups) > 4
    axes.set_xticks(positions, groups, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize="medium")
    if len(series) > 1:
        axes.legend(fontsize="small")
    axes.grid(True, axis="y", alpha=0.3)
    _save(figure, path)
    return {"groups": groups, "series": series, "values": table}
