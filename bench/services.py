"""Processes a run starts, all on 127.0.0.1: the backend and measured children.

A `Measured` child runs in its own process group, so a timeout ends it and
every worker it spawned, and nothing else. Its memory is read from /proc
while it runs: each process's `VmHWM` (the high-water mark of its own
address space) and the sum of `VmRSS` over the tree. `getrusage` and
`wait4` cannot be used here: Linux carries the parent's resident size at
fork into the child's `ru_maxrss`, so every child of this (large) harness
would report at least the harness's own size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

__all__ = [
    "ROOT",
    "Backend",
    "Measured",
    "Outcome",
    "pg_reachable",
    "start_backend",
]

ROOT = Path(__file__).resolve().parents[1]
_POLL_S = 0.01
_SAMPLE_S = 0.05


@dataclass
class Outcome:
    """How a measured child ended."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    tree_rss_mb: float
    report: dict[str, Any] = field(default_factory=dict)
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def why(self) -> str:
        """The last line the child logged, for a note when it failed."""
        lines = [line for line in self.log.splitlines() if line.strip()]
        return f"exit {self.returncode}: {lines[-1] if lines else 'no output'}"


class Measured:
    """A child process timed from spawn to exit; see the module docstring."""

    def __init__(
        self, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ):
        self.argv = argv
        self.log_path = log_path
        self._out_path = log_path.with_suffix(".out")
        self.started = time.monotonic()
        with open(log_path, "wb") as err, open(self._out_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self._memory = _MemorySampler(self.proc.pid)
        self._memory.start()

    def running(self) -> bool:
        """Whether the child still runs; never reaps it (`wait` does that)."""
        if self.proc.returncode is not None:
            return False
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.proc.pid, flags) is None

    def wait(self, timeout: float) -> Outcome:
        """Reap the child (killing its group after `timeout` seconds).

        A failure is an outcome too (`ok` is false, `why` says why): a
        loader giving up is a result the report must show.
        """
        deadline = self.started + timeout
        killed = False
        while True:
            pid, status = os.waitpid(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if not killed and time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(_POLL_S)
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._memory.finish()

        log = self.log_path.read_text(errors="replace")[-3000:]
        if killed:
            log += f"\nkilled by the harness after its {timeout:.0f}s timeout"
        return Outcome(
            returncode=self.proc.returncode,
            wall_s=wall,
            peak_rss_mb=self._memory.largest_kb / 1024,
            tree_rss_mb=self._memory.tree_kb / 1024,
            report=_last_json(self._out_path) if self.proc.returncode == 0 else {},
            log=log,
        )


class _MemorySampler(threading.Thread):
    """Peak memory of a process tree, read from /proc every 50 ms.

    A process counts from its second sample on: the first may catch it
    between fork and exec, still carrying its parent's pages.
    """

    def __init__(self, root: int):
        super().__init__(name=f"rss-{root}", daemon=True)
        self.root = root
        self.largest_kb = 0
        self.tree_kb = 0
        self._seen: set[int] = set()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(_SAMPLE_S)

    def finish(self) -> None:
        self._done.set()
        self.join()

    def _sample(self) -> None:
        total = 0
        for pid in _tree(self.root):
            fields = _status(pid)
            if pid not in self._seen:
                self._seen.add(pid)
                continue
            self.largest_kb = max(self.largest_kb, fields.get("VmHWM", 0))
            total += fields.get("VmRSS", 0)
        self.tree_kb = max(self.tree_kb, total)


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return found


def _status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/status; empty once the process is gone."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    fields[name] = int(rest.split()[0])
    except OSError:
        return {}
    return fields


def _last_json(path: Path) -> dict[str, Any]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        return {}
    report: dict[str, Any] = json.loads(lines[-1])
    return report


@dataclass
class Backend:
    """A `fluxion serve` process and the URL it answers on."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_backend(
    db: Path, redis_url: str, key_prefix: str, port: int, log: Path
) -> Backend:
    """Run `fluxion serve` (one uvicorn worker) and wait for /health.

    Raises:
        RuntimeError: it exited, or did not answer within 60 seconds.
    """
    argv = [
        sys.executable,
        "-m",
        "backend.cli",
        "serve",
        "--db",
        str(db),
        "--redis",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "FLUXION_ADMIN_TOKEN"}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    backend = Backend(proc, f"http://127.0.0.1:{port}", log)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"fluxion serve exited with {proc.returncode}; its log ends:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            if httpx.get(f"{backend.base_url}/health", timeout=1).status_code == 200:
                return backend
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    backend.stop()
    raise RuntimeError(f"fluxion serve did not answer /health in 60s; see {log}")


def pg_reachable(dsn: str) -> str | None:
    """None if PostgreSQL answers at `dsn`, else why not."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as con:
            con.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {dsn!r} did not answer: {exc}".strip()
    return None
