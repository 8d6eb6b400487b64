"""Progress of long work for whoever shows it in this process: a flow reports
(what, done, total); the CLI listens with a bar on stderr. The Prefect UI gets its own
progress artifact from the flow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

Listener = Callable[[str, int, int], None]

_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Add a listener; returns the call that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def report(what: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(what, done, total)


class Bar:
    """A bar redrawn in place on a terminal (at most ten times a second), or one plain
    line per tenth of the work when the stream is a file or a pipe."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn_at = 0.0
        self.tenths: dict[str, int] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        fraction = min(1.0, done / total) if total > 0 else 1.0
        figures = f"{fraction:4.0%} {done:,}/{max(total, done):,} rows"
        if self.tty:
            now = time.monotonic()
            if fraction < 1.0 and now - self.drawn_at < 0.1:
                return
            self.drawn_at = now
            filled = int(round(fraction * self.WIDTH))
            end = "\n" if fraction >= 1.0 else ""
            self.stream.write(f"\r{what} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {figures}{end}")
            self.stream.flush()
            return
        tenth = int(fraction * 10)
        if tenth > self.tenths.get(what, -1):
            self.tenths[what] = tenth
            self.stream.write(f"{what}: {figures}\n")
            self.stream.flush()
