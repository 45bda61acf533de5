"""A dependency-free progress bar for long loops (training, class models).

Writes to stderr, redraws in place on a terminal and prints a line every
``every`` seconds otherwise (logs, CI); silent when ``disable`` is true.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", disable: bool = False, stream=None, every: float = 10.0):
        self.total, self.desc, self.disable = int(total), desc, disable
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every
        self.count = 0
        self.start = time.perf_counter()
        self._last_print = -1e9
        self.postfix = ""

    def update(self, n: int = 1, **postfix) -> None:
        self.count += n
        if postfix:
            self.postfix = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items()
            )
        if self.disable:
            return
        now = time.perf_counter()
        if self.tty or now - self._last_print >= self.every or self.count >= self.total:
            self._last_print = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        frac = self.count / self.total if self.total else 1.0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"{self.desc} [{bar}] {self.count}/{self.total} {elapsed:5.1f}s<{eta:5.1f}s {self.postfix}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if not self.disable and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
