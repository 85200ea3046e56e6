"""Progress of a command made of a known number of steps (materialize, generate, bench): on a
terminal a live bar (rich) with the count, what is running, the time elapsed and the time left;
elsewhere (a pipe, a log file, CI, the tests) one plain line per finished step, with the same
count and estimate, so nothing waits silently and logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02} min"


class Progress:
    """Use as a context manager: `doing(text)` says what runs now, `step(text)` reports a finished
    step, `note(text)` prints a line without counting it."""

    def __init__(self, total: int, title: str, out: TextIO | None = None, width: int = 24):
        self.total, self.title, self.width = max(total, 1), title, width
        self.out = out or sys.stderr
        self.done = 0
        self.began = time.perf_counter()
        self._live = None
        self._task = None
        if self.out.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._live = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=Console(file=self.out),
                transient=False,
            )

    def __enter__(self) -> Progress:
        self.began = time.perf_counter()
        if self._live is not None:
            self._live.start()
            self._task = self._live.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()

    def eta(self) -> float | None:
        """Seconds left at the average pace of the steps so far (None before the first)."""
        if not self.done:
            return None
        return (time.perf_counter() - self.began) / self.done * max(self.total - self.done, 0)

    def doing(self, text: str) -> None:
        if self._live is not None:
            self._live.update(self._task, description=f"{self.title}: {text}")

    def note(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        self.done += 1
        if self._live is not None:
            self._live.console.print(f"  {self.done}/{self.total} {text}", markup=False, highlight=False)
            self._live.update(self._task, advance=1, description=self.title)
            return
        filled = self.width * min(self.done, self.total) // self.total
        elapsed = time.perf_counter() - self.began
        left = self.eta()
        timing = f"{_duration(elapsed)} elapsed" + (f", about {_duration(left)} left" if left and left >= 1 else "")
        print(f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {text} · {timing}", file=self.out, flush=True)
