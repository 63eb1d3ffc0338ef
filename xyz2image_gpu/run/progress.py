"""Progress of a run: a tqdm bar on a terminal, plain lines elsewhere, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

__all__ = [
    "Progress",
]


# ----------------------------------------------------------------------------- progress


class Progress:
    """Progress report: a tqdm bar on a terminal, plain periodic lines when piped, or nothing.

    Parameters
    ----------
    total : int
        Images to render.
    mode : {"auto", "bar", "lines", "none"}
        ``auto``: a bar when ``stream`` is a terminal, else lines.
    stream : file, optional
        Where to write (default stderr).
    interval : float
        Seconds between plain lines.
    """

    def __init__(self, total: int, mode: str = "auto", stream: TextIO | None = None,
                 interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.total = int(total)
        self.done = 0
        self.interval = interval
        self._start = time.perf_counter()
        self._last = self._start
        self._bar = None
        self.units_total: int | None = None
        self.units_done = 0
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="img", file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)

    def set_units(self, total: int) -> None:
        """Count units (file x stack) too: shown beside the images."""
        self.units_total = int(total)
        self._show_units()

    def unit_done(self) -> None:
        self.units_done += 1
        self._show_units()

    def _show_units(self) -> None:
        if self._bar is not None and self.units_total is not None:
            self._bar.set_postfix_str(f"units {self.units_done}/{self.units_total}")

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last >= self.interval:
                self._last = now
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = f"{eta:.0f} s" if np.isfinite(eta) else "?"
        units = ("" if self.units_total is None
                 else f" in {self.units_done}/{self.units_total} units")
        print(f"rendered {self.done}/{self.total} images{units} ({pct:.0f}%), {rate:.1f} "
              f"images/s, ETA {eta_s}", file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """Print a message without garbling the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
