"""Measure 1: a lease's acquire+release against plain Redis locks, same Redis.

Uncontended, one thread of this process calls each lock in turn. Contended,
`scale.contenders` processes start together at a barrier and call the same
lock as fast as they can, holding it for no time: every call's latency
then includes its wait. Each repeat runs every lock, in a rotated order,
and a ratio is taken within the repeat (fluxion / alternative), so drift
of this shared machine between repeats cancels; the figure is the median
of those per-repeat ratios.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from .lockkinds import Op, lock_op
from .results import Results
from .scale import Scale

__all__ = ["CONTENDED", "UNCONTENDED", "measure_locks"]

UNCONTENDED = (
    "fluxion_protocol",
    "fluxion_file",
    "duckdb_open",
    "redis_py",
    "prl",
    "prl_renew",
)
CONTENDED = (
    "fluxion_protocol",
    "fluxion_file",
    "redis_py",
    "redis_py_1ms",
    "prl",
    "prl_renew",
)
FLUXION = ("fluxion_protocol", "fluxion_file")
_FILE_KINDS = {"fluxion_file", "duckdb_open"}
_CHECKED = (
    ("fluxion_protocol", "redis_py"),
    ("fluxion_protocol", "prl"),
    ("fluxion_file", "redis_py"),
)
LABELS = {
    "fluxion_protocol": "fluxion lease (Redis part)",
    "fluxion_file": "fluxion lease + tiny file",
    "duckdb_open": "DuckDB open+close, no lock",
    "redis_py": "redis-py Lock",
    "redis_py_1ms": "redis-py Lock, 1 ms poll",
    "prl": "python-redis-lock",
    "prl_renew": "python-redis-lock + renewal",
}
_WARMUP = 5
_PREFIX = "fxbench-m1"
_RESULT_WAIT_S = 300.0


def measure_locks(res: Results, scale: Scale, redis_url: str, workdir: Path) -> None:
    """Record measure 1's figures and checks into `res`."""
    tiny = str(workdir / "m1-tiny.duckdb")
    with lock_op("fluxion_file", redis_url, prefix=_PREFIX, tiny_db=tiny) as op:
        op()  # creates the file and its fence table

    quiet = _uncontended(scale, redis_url, tiny)
    busy, rates = _contended(scale, redis_url, tiny)
    _record(res, "uncontended", quiet)
    _record(res, "contended", busy)
    for kind, per_run in rates.items():
        names = [f"m1.contended.{kind}.run{r}.ops_per_s" for r in range(len(per_run))]
        for name, rate in zip(names, per_run):
            res.measured(name, rate, "ops/s")
        res.stat(
            f"m1.contended.{kind}.ops_per_s",
            res.collect(f"m1.contended.{kind}.ops_per_s_runs", names),
            "median",
        )

    for mode in ("uncontended", "contended"):
        for mine, theirs in _CHECKED:
            stem = f"m1.{mode}.{mine}_vs_{theirs}"
            res.check(
                "M1",
                f"{mode}: {LABELS[mine]} / {LABELS[theirs]}, p50 and p99",
                [f"{stem}.p50_ratio", f"{stem}.p99_ratio"],
                "<=",
                1.0,
            )


def _timed(op: Op, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        op()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _rotated(kinds: Sequence[str], by: int) -> list[str]:
    shift = by % len(kinds)
    return [*kinds[shift:], *kinds[:shift]]


def _uncontended(
    scale: Scale, redis_url: str, tiny: str
) -> dict[str, list[list[float]]]:
    runs: dict[str, list[list[float]]] = {kind: [] for kind in UNCONTENDED}
    for repeat in range(scale.lock_repeats):
        for kind in _rotated(UNCONTENDED, repeat):
            n = scale.lock_file_ops if kind in _FILE_KINDS else scale.lock_ops
            with lock_op(kind, redis_url, prefix=_PREFIX, tiny_db=tiny) as op:
                for _ in range(_WARMUP):
                    op()
                runs[kind].append(_timed(op, n))
    return runs


def _contended(
    scale: Scale, redis_url: str, tiny: str
) -> tuple[dict[str, list[list[float]]], dict[str, list[float]]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(scale.contenders)
    results: Queue[Any] = ctx.Queue()
    commands: list[Queue[Any]] = [ctx.Queue() for _ in range(scale.contenders)]
    workers = [
        ctx.Process(
            target=contender, args=(redis_url, tiny, barrier, box, results), daemon=True
        )
        for box in commands
    ]
    for worker in workers:
        worker.start()

    runs: dict[str, list[list[float]]] = {kind: [] for kind in CONTENDED}
    rates: dict[str, list[float]] = {kind: [] for kind in CONTENDED}
    try:
        for repeat in range(scale.contended_repeats):
            for kind in _rotated(CONTENDED, repeat):
                n = (
                    scale.contended_file_ops
                    if kind in _FILE_KINDS
                    else (scale.contended_ops)
                )
                for box in commands:
                    box.put((kind, n))
                got = [results.get(timeout=_RESULT_WAIT_S) for _ in workers]
                failed = [g[1] for g in got if g[0] == "error"]
                if failed:
                    raise RuntimeError(f"a contender failed on {kind}: {failed[0]}")
                runs[kind].append([ms for g in got for ms in g[1]])
                wall = max(g[3] for g in got) - min(g[2] for g in got)
                rates[kind].append(n * len(workers) / wall)
    finally:
        for box in commands:
            box.put(None)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    return runs, rates


def contender(
    redis_url: str,
    tiny: str,
    barrier: Barrier,
    commands: Queue[Any],
    results: Queue[Any],
) -> None:
    """One contending process: for each command, meet the others, then call."""
    while (command := commands.get()) is not None:
        kind, n = command
        try:
            with lock_op(kind, redis_url, prefix=_PREFIX, tiny_db=tiny) as op:
                op()  # connection and script cache warm before the start line
                barrier.wait(timeout=_RESULT_WAIT_S)
                started = time.monotonic()
                samples = _timed(op, n)
                results.put(("ok", samples, started, time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            results.put(("error", repr(exc), 0.0, 0.0))


def _record(res: Results, mode: str, runs: dict[str, list[list[float]]]) -> None:
    for kind, per_run in runs.items():
        stem = f"m1.{mode}.{kind}"
        pooled = res.add_series(
            f"{stem}.ms", [ms for run in per_run for ms in run], "ms"
        )
        for q in ("p50", "p99"):
            res.stat(f"{stem}.{q}_ms", pooled, q)
        for r, samples in enumerate(per_run):
            one = res.add_series(f"{stem}.run{r}.ms", samples, "ms")
            for q in ("p50", "p99"):
                res.stat(f"{stem}.run{r}.{q}_ms", one, q)

    for mine in FLUXION:
        for theirs in (k for k in runs if k not in FLUXION and k != "duckdb_open"):
            for q in ("p50", "p99"):
                _paired_ratio(res, mode, mine, theirs, q, len(runs[mine]))


def _paired_ratio(
    res: Results, mode: str, mine: str, theirs: str, q: str, repeats: int
) -> None:
    stem = f"m1.{mode}.{mine}_vs_{theirs}"
    names = []
    for r in range(repeats):
        name = f"{stem}.run{r}.{q}_ratio"
        ratio = res.ratio(
            name, f"m1.{mode}.{mine}.run{r}.{q}_ms", f"m1.{mode}.{theirs}.run{r}.{q}_ms"
        )
        if ratio is not None:
            names.append(name)
    if names:
        res.stat(
            f"{stem}.{q}_ratio", res.collect(f"{stem}.{q}_ratios", names), "median"
        )
