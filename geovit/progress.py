"""Progress that reads well both on a terminal and in a log file.

On a terminal (stderr is a TTY and ``CI`` is not set) long loops show a tqdm bar. Redirected
output — CI logs, ``nohup``, SLURM — gets plain lines instead, no carriage returns or escape
codes: one every ``every`` seconds (and at the end) with the count, the rate and the time left::

    evaluate test: 120/480 batches (25 %), 14.2 batches/s, ETA 0:00:25

Public API::

    interactive(stream=None) -> bool                       # bar or lines?
    Progress(total, desc, unit="step", enabled=None)       # .update(n), .close()
    progress(iterable, desc, total=None, unit="step")      # wraps an iterable
    format_duration(seconds) -> "0:01:05"
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

#: seconds between two plain progress lines
EVERY = 10.0


def interactive(stream=None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal a bar can redraw (and not a CI log)."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("CI") is None


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative duration.

    >>> format_duration(65.4), format_duration(3 * 3600 + 1)
    ('0:01:05', '3:00:01')
    """
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of a loop of known length: a tqdm bar on a terminal, plain lines otherwise.

    Args:
        total: number of steps (0 or None: unknown; lines then show no percentage or ETA).
        desc: label of the bar / lines.
        unit: what a step is (``"window"``, ``"batch"``).
        enabled: ``False`` shows nothing; ``None`` (default): a bar when ``stream`` is
            :func:`interactive`, lines otherwise; ``True``: lines even on a terminal.
        stream: where it goes (default ``sys.stderr``).
        every: seconds between two plain lines.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "step", enabled: bool | None = None,
                 stream=None, every: float = EVERY):
        self.total, self.desc, self.unit, self.done = int(total or 0), desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled is not False
        self.every = float(every)
        self.t0 = time.perf_counter()
        self._last = self.t0
        self.bar = None
        if self.enabled and enabled is None and interactive(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total or None, desc=desc, unit=unit, file=self.stream, leave=False)

    def line(self) -> str:
        """The current state as one line (what the plain mode prints)."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit}s ({100 * self.done / self.total:.0f} %)"
        else:
            text += f" {self.unit}s"
        text += f", {rate:.1f} {self.unit}s/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {format_duration((self.total - self.done) / rate)}"
        return text

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.every or (self.total and self.done >= self.total)):
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar (plain mode: print the last line if it was not printed)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done and not (self.total and self.done >= self.total):
            print(self.line(), file=self.stream, flush=True)  # the final state (a full count printed itself)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "step",
             enabled: bool | None = None, stream=None) -> Iterator[T]:
    """Iterate ``iterable`` showing :class:`Progress` (``total`` defaults to ``len(iterable)``).

    Args:
        iterable: what to loop over.
        desc: label.
        total: number of items, when ``iterable`` has no length.
        unit: what an item is.
        enabled: as for :class:`Progress`.
        stream: as for :class:`Progress`.

    Yields:
        The items of ``iterable``.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit=unit, enabled=enabled, stream=stream) as bar:
        for item in iterable:
            yield item
            bar.update(1)
