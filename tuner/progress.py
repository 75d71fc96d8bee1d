"""Live progress of an experiment: trials finished / max_evals, best loss, busy workers.

On a terminal it is a Rich progress bar that redraws in place; otherwise (logs, CI)
one line per change in the number of finished trials.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class Snapshot:
    finished: int
    max_evals: int
    best_loss: float | None
    running: int
    queued: int
    failed: int
    workers: int

    def describe(self) -> str:
        best = "-" if self.best_loss is None else f"{self.best_loss:.6g}"
        return (f"best loss {best} · workers busy {self.running}/{self.workers} · "
                f"queued {self.queued} · failed {self.failed}")


class ProgressView:
    """Shows snapshots; ``enabled=False`` makes every method a no-op."""

    def __init__(self, name: str, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.name = name
        self.console = console or Console(file=sys.stderr)
        self._progress: Progress | None = None
        self._task = None
        self._last_finished = -1

    def __enter__(self) -> ProgressView:
        if self.enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.name, total=None, status="")
        return self

    def update(self, snap: Snapshot) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=snap.finished, total=snap.max_evals,
                                  status=snap.describe())
        elif snap.finished != self._last_finished:
            self._last_finished = snap.finished
            self.console.print(f"[{self.name}] {snap.finished}/{snap.max_evals} trials · "
                               f"{snap.describe()}", markup=False, highlight=False,
                               soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def best_of(losses: list[float]) -> float | None:
    finite = [x for x in losses if x is not None and not math.isnan(x)]
    return min(finite) if finite else None
