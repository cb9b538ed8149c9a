"""Progress bars on stderr for each phase: done/total, rate and ETA.

On a terminal the bar redraws in place (at most 10 times a second); otherwise (a log, a test) it
prints one line when the phase ends, so logs are not flooded with carriage returns."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from edgellm.units import human_bytes

_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """``with Progress("converting", total_bytes) as bar: bar.update(n)``."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(failed=exc_type is not None)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.live and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw("\r")

    def set(self, done: int) -> None:
        self.update(done - self.done)

    def line(self) -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * _WIDTH)
        bar = "█" * filled + "░" * (_WIDTH - filled)
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        return (
            f"{self.label:<12} {frac * 100:3.0f}% {bar} {human_bytes(self.done)}/{human_bytes(self.total)}"
            f"  {human_bytes(rate)}/s  ETA {_duration(eta)}"
        )

    def _draw(self, start: str) -> None:
        self.stream.write(f"{start}{self.line()}\x1b[K" if self.live else f"{self.line()}\n")
        self.stream.flush()

    def close(self, failed: bool = False) -> None:
        if not self.enabled:
            return
        if failed:
            if self.live:
                self.stream.write("\n")
            return
        self.done = max(self.done, self.total)
        done = (
            f"{self.label:<12} done: {human_bytes(self.total)} in {_duration(self.elapsed)} "
            f"({human_bytes(self.rate)}/s)"
        )
        self.stream.write(f"\r{done}\x1b[K\n" if self.live else f"{done}\n")
        self.stream.flush()
        self.enabled = False
