"""A progress bar for long runs: one updating line on a terminal, one line per step in logs."""

import sys
import time


class Progress:
    """A one-line progress bar on a terminal, one line per step elsewhere (logs, CI)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label:<32} "
            f"elapsed {elapsed:6.1f}s  eta {eta:6.1f}s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
