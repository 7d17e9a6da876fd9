"""Per-store progress bars on a terminal while the ETL runs.

Workers send one small event per settled file; the parent draws one line
per store (files done, rows, rows/s, the lease wait of the worker that owns
the store), redrawn in place. Off a terminal nothing is drawn: the workers'
plain log lines are the record instead.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from queue import Empty
from typing import Any, TextIO

_STORE = re.compile(r"store_(\d+)")
BAR = 24


def store_of(path: str | Path) -> str:
    match = _STORE.search(Path(path).name)
    return match.group(1) if match else "--"


class Progress:
    """Draws bars from events on `queue` until `stop()`; see module docstring."""

    def __init__(self, paths: list[Path], queue: Any, stream: TextIO = sys.stderr):
        self._queue = queue
        self._stream = stream
        self._total: dict[str, int] = defaultdict(int)
        for path in paths:
            self._total[store_of(path)] += 1
        self._done: dict[str, int] = defaultdict(int)
        self._rows: dict[str, int] = defaultdict(int)
        self._wait: dict[str, float] = defaultdict(float)
        self._started = time.monotonic()
        self._drawn = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._drain()
        self._draw()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._drain(timeout=0.2)
            self._draw()

    def _drain(self, timeout: float = 0.0) -> None:
        try:
            event = self._queue.get(timeout=timeout) if timeout else None
            while True:
                if event is not None:
                    self._apply(event)
                event = self._queue.get_nowait()
        except (Empty, EOFError, OSError):
            return

    def _apply(self, event: tuple[str, int, float]) -> None:
        path, rows, wait = event
        store = store_of(path)
        self._done[store] += 1
        self._rows[store] += rows
        self._wait[store] = wait

    def _draw(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        lines = []
        for store in sorted(self._total):
            total, done = self._total[store], self._done[store]
            filled = BAR * done // max(total, 1)
            lines.append(
                f"store {store} [{'#' * filled}{'.' * (BAR - filled)}]"
                f" {done:>4}/{total:<4} files {self._rows[store]:>11,} rows"
                f" {self._rows[store] / elapsed:>10,.0f} rows/s"
                f"  lock wait {self._wait[store]:6.1f}s"
            )
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self._stream.flush()
        self._drawn = len(lines)
