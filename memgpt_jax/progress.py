"""Progress on long work: a redrawn bar on a terminal, plain periodic lines otherwise.

``tqdm`` redraws its bar with carriage returns, which a log file keeps as one
unreadable line per redraw. :func:`bar` gives tqdm only when stderr is a terminal;
written to a file or a pipe, the same calls print one plain line every
``MEMGPT_PROGRESS_EVERY`` seconds (default 30) and a last one when the work ends::

    evaluate: 120/400 batches (30%), 3.2/s, 0:42 elapsed, ETA 1:27
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

EVERY_ENV = "MEMGPT_PROGRESS_EVERY"


def on_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """tqdm's interface (the part this project uses), printing plain lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: Any = None, disable: bool = False,
                 **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit.strip()
        self.n = self._start_n = initial
        # tqdm's ``disable``: no output at all
        self.every = float("inf") if disable else float(os.environ.get(EVERY_ENV, 30.0))
        self.file = file
        self._t0 = self._last = time.perf_counter()
        self._postfix = ""
        self._shown: int | None = None  # the count of the last line printed

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str, file: Any = None) -> None:
        print(message, file=file or self._out())

    def close(self) -> None:
        if self._shown is not None and self.n != self._shown:  # the end of work that printed along the way
            self._print(time.perf_counter())

    def _out(self) -> Any:
        return self.file or sys.stderr

    def _print(self, now: float) -> None:
        elapsed = now - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else ""),
                 f"{rate:.3g}/s", f"{_clock(elapsed)} elapsed"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self._out(), flush=True)
        self._shown = self.n


def bar(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal (``kwargs`` are tqdm's), a :class:`PlainProgress` otherwise."""
    stream = kwargs.get("file") or sys.stderr
    if on_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)
