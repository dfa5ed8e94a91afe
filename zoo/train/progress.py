"""Progress and metric logs: a rich progress bar with ETA on a terminal, plain lines otherwise; ``metrics.csv``
rewritten every epoch, TensorBoard scalars when ``tensorboard`` is installed, and a final summary table."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["Reporter", "write_csv"]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` (one dict per epoch) to ``path`` atomically; columns are the union of the keys in order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(temporary, path)


class Reporter:
    """Everything a run tells the user; silent on processes other than rank 0 (``enabled=False``)."""

    def __init__(
        self, output_dir: Path | None, *, enabled: bool = True, console: Console | None = None, log_every: int = 10
    ) -> None:
        self.enabled = enabled
        self.console = console or Console()
        self.output_dir = output_dir
        self.log_every = log_every
        self.progress: Progress | None = None
        self.task: Any = None
        self.total_steps = 0
        self.start_step = 0
        self.started = time.monotonic()
        self.writer: Any = None
        if enabled and output_dir is not None:
            self.writer = _tensorboard(output_dir / "tensorboard")

    def message(self, text: str) -> None:
        """Print one line (rank 0 only)."""
        if self.enabled:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start(self, total_steps: int, done: int) -> None:
        """Begin the progress display for ``total_steps`` optimiser steps, ``done`` of them already taken."""
        self.total_steps, self.start_step, self.started = total_steps, done, time.monotonic()
        if not self.enabled or not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done, status="")

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """Report optimiser step ``step`` (1-based count of steps taken)."""
        if not self.enabled:
            return
        status = f"epoch {epoch} loss {loss:.4g} lr {lr:.3g}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, status=status)
            return
        if step % self.log_every == 0 or step == self.total_steps:
            elapsed = time.monotonic() - self.started
            rate = (step - self.start_step) / elapsed if elapsed > 0 else math.inf
            remaining = (self.total_steps - step) / rate if rate > 0 else math.inf
            eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
            self.message(f"step {step}/{self.total_steps} {status} eta {eta}")

    def epoch(self, row: dict[str, Any], history: Sequence[dict[str, Any]]) -> None:
        """Report the end of an epoch: one line, ``metrics.csv`` rewritten, TensorBoard scalars."""
        if not self.enabled:
            return
        text = " ".join(f"{key} {_format(value)}" for key, value in row.items())
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            self.message(text)
        if self.output_dir is not None:
            write_csv(history, self.output_dir / "metrics.csv")
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, float) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        """Stop the progress bar and close TensorBoard."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def summary(self, title: str, columns: dict[str, dict[str, float]]) -> None:
        """A table with one row per metric and one column per entry of ``columns`` (e.g. step 0, best)."""
        if not self.enabled:
            return
        table = Table(title=title)
        table.add_column("metric")
        for name in columns:
            table.add_column(name, justify="right")
        metrics: list[str] = []
        for values in columns.values():
            metrics.extend(key for key in values if key not in metrics)
        for metric in metrics:
            table.add_row(
                metric, *(_format(values[metric]) if metric in values else "-" for values in columns.values())
            )
        self.console.print(table)


def _tensorboard(directory: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` if the ``tensorboard`` package is installed, else ``None``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory))
