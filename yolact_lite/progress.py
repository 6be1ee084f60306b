"""Progress output that suits where it goes: a live tqdm bar on a terminal, one plain line
every ``interval_s`` seconds (and at the end) in a log file or pipe."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Optional, TextIO

__all__ = ["progress_bar", "LineProgress"]


class LineProgress:
    """The part of tqdm's interface the library uses, printing whole lines."""

    def __init__(self, total: Optional[int] = None, desc: str = "", unit: str = "it", initial: int = 0,
                 file: Optional[TextIO] = None, interval_s: float = 30.0, clock=time.monotonic):
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.file = file or sys.stderr
        self.interval_s, self.clock = float(interval_s), clock
        self.start = self.last = clock()
        self.initial = int(initial)
        self.postfix = ""
        self._written = None  # n at the last line

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval_s:
            self._write()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _write(self) -> None:
        self.last = self.clock()
        self._written = self.n
        elapsed = self.last - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        extra = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit} ({rate:.2f} {self.unit}/s, {elapsed:.0f} s){extra}",
              file=self.file, flush=True)

    def close(self) -> None:
        if self._written != self.n:
            self._write()

    def __iter__(self):
        raise TypeError("LineProgress wraps no iterable; use progress_bar(iterable=...)")


def _iterate(iterable: Iterable, bar: LineProgress):
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: Optional[TextIO] = None, interval_s: float = 30.0,
                 **tqdm_kwargs: Any):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`;
    with ``iterable``, an iterator over it that updates the bar."""
    file = file or sys.stderr
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, dynamic_ncols=True,
                    **tqdm_kwargs)
    bar = LineProgress(total=total, desc=desc, unit=unit, initial=initial, file=file, interval_s=interval_s)
    return bar if iterable is None else _iterate(iterable, bar)
