"""Progress output: a rich bar with ETA on a terminal, metrics.csv every epoch, TensorBoard when installed."""

from __future__ import annotations

import io
import sys
import types

from rich.console import Console

from zoo.train.progress import Reporter


def test_terminal_progress_bar_csv_and_summary(tmp_path):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    reporter = Reporter(tmp_path, console=console)
    reporter.start(total_steps=4, done=0)
    history = []
    for step in range(1, 5):
        reporter.step(step, epoch=1, loss=1.0 / step, lr=1e-3)
        if step % 2 == 0:
            history.append({"epoch": step // 2, "step": step, "val_loss": 0.5 / step})
            reporter.epoch(history[-1], history)
    reporter.close()
    reporter.summary("done", {"step 0": {"val_loss": 1.0}, "best": {"val_loss": 0.125}})
    out = buffer.getvalue()
    assert "4/4" in out and "eta" in out and "epoch 2 step 4 val_loss 0.125" in out and "best" in out
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,step,val_loss", "1,2,0.25", "2,4,0.125"]


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    written = []

    class SummaryWriter:
        def __init__(self, directory: str) -> None:
            written.append(("dir", directory))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def flush(self) -> None:
            written.append("flush")

        def close(self) -> None:
            written.append("close")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    reporter = Reporter(tmp_path, console=Console(file=io.StringIO()))
    row = {"epoch": 1, "step": 6, "train_loss": 2.0, "val_forces_mae": 0.5}
    reporter.epoch(row, [row])
    reporter.close()
    assert written == [
        ("dir", str(tmp_path / "tensorboard")),
        ("train/loss", 2.0, 6),
        ("val/forces_mae", 0.5, 6),
        "flush",
        "close",
    ]
    silent = Reporter(tmp_path, enabled=False)
    silent.message("not printed")
    assert silent.writer is None
