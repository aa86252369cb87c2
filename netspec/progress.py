"""Training progress on a terminal: a live bar (iteration / max_iter, smoothed loss, learning
rate, iterations per second, time left) and a short table for each test pass. Off a terminal
the solver's Caffe log lines are printed instead (see log.py), so log parsers keep working."""
from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


class RichProgress:
    """Solver observer; use as a context manager around solve()."""

    def __init__(self, max_iter: int, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]Iteration {task.completed:>6}/{task.total}"), BarColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} it/s"), TimeRemainingColumn(),
            console=self.console, transient=False)
        self.task = self.progress.add_task("train", total=max_iter, loss="-", lr="-", speed="-")
        self._last = (time.perf_counter(), 0)
        self._speed = None
        self._loss = "-"

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def on_iteration(self, solver) -> None:
        now, it = time.perf_counter(), solver.iter
        then, before = self._last
        if now - then >= 0.5 or it == 1:  # on a GPU reading the loss waits: twice a second
            if it > 1:
                rate = (it - before) / (now - then)
                self._speed = rate if self._speed is None else 0.7 * self._speed + 0.3 * rate
            self._last = (now, it)
            self._loss = f"{float(solver.smoothed_loss):.4g}"
        self.progress.update(self.task, completed=it, loss=self._loss,
                             lr=f"{solver.last_rate:.3g}",
                             speed="-" if self._speed is None else f"{self._speed:.1f}")

    def on_test(self, solver, index: int, means: dict) -> None:
        net = solver.test_nets[index]
        table = Table(title=f"Iteration {solver.iter}, test net #{index}", title_justify="left")
        table.add_column("output")
        table.add_column("value", justify="right")
        table.add_column("loss weight", justify="right")
        for name in net.outputs:
            weight = net.blob_loss_weight(name)
            for v in np.ravel(means[name]):
                table.add_row(name, f"{v:.6g}", f"{weight:g}" if weight else "")
        self.progress.console.print(table)

    def on_snapshot(self, solver, model_path: str, state_path: str) -> None:
        self.progress.console.print(f"Iteration {solver.iter}: snapshot {model_path} "
                                    f"(resume with --snapshot {state_path})")
