"""Run loaders in parallel worker processes, one group of stores each.

Each worker is a separate process with its own lease manager, exactly as
separate ETL jobs would be in production; they queue for the file through
Redis like everyone else. Files of one store stay in one worker, in the
order given (a folder's files in name order, so dated folders in date
order), so a store's days load in sequence and a correction after the
file it corrects.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lockmanager import DuckDBWriteLockManager, LeaseConfig

from .defaults import DEFAULT_CHUNK_ROWS, DEFAULT_TARGET_HOLD, DEFAULT_WAIT
from .loader import Loader
from .progress import Progress
from .report import FileReport, LoadReport

log = logging.getLogger("etl")
_STORE = re.compile(r"store_(\d+)")


def group_by_store(paths: list[Path], workers: int) -> list[list[Path]]:
    """Split files into at most `workers` groups, each store in one group."""
    stores: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        match = _STORE.search(path.name)
        stores[match.group(1) if match else path.name].append(path)
    groups: list[list[Path]] = [[] for _ in range(max(1, workers))]
    for files in sorted(stores.values(), key=len, reverse=True):
        min(groups, key=lambda g: sum(p.stat().st_size for p in g)).extend(files)
    # Each group keeps the order given: of two files for one store-day, the
    # later one is the correction that stays.
    order = {path: i for i, path in enumerate(paths)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def load_files(
    paths: list[Path],
    *,
    redis_url: str,
    db_path: str,
    config: LeaseConfig | None = None,
    workers: int = 1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    wait_for: float = DEFAULT_WAIT,
    target_hold: float = DEFAULT_TARGET_HOLD,
) -> LoadReport:
    """Load `paths` with `workers` processes; one merged report.

    With `progress`, per-store bars are drawn on stderr (a terminal) and the
    workers' per-file log lines are left out.
    """
    started = time.monotonic()
    groups = group_by_store(paths, workers)
    report = LoadReport()
    context = multiprocessing.get_context("spawn")
    with context.Manager() if progress else nullcontext() as shared:
        events = shared.Queue() if shared is not None else None
        bars = Progress(paths, events) if events is not None else None
        if bars is not None:
            bars.start()
        try:
            _load_groups(
                groups,
                report,
                context,
                events,
                redis_url,
                db_path,
                config,
                chunk_rows,
                force,
                options,
                wait_for,
                target_hold,
            )
        finally:
            if bars is not None:
                bars.stop()
    report.elapsed_s = time.monotonic() - started
    return report


def _load_groups(
    groups: list[list[Path]],
    report: LoadReport,
    context: Any,
    events: Any,
    *args: Any,
) -> None:
    if len(groups) <= 1:
        for group in groups:
            report.merge(_run(group, *args, 0, events))
    else:
        with ProcessPoolExecutor(len(groups), mp_context=context) as pool:
            futures = [
                pool.submit(_run_remote, group, *args, i, events)
                for i, group in enumerate(groups)
            ]
            for future in futures:
                report.merge(_from_dict(future.result()))


def _run(
    group: list[Path],
    redis_url: str,
    db_path: str,
    config: LeaseConfig | None,
    chunk_rows: int,
    force: dict[str, str] | None,
    options: dict[str, Any] | None,
    wait_for: float,
    target_hold: float,
    index: int,
    events: Any = None,
) -> LoadReport:
    manager = DuckDBWriteLockManager(
        redis_url, db_path, config=config, name=f"etl-worker-{index}"
    )
    try:
        loader = Loader(
            manager,
            chunk_rows=chunk_rows,
            force=force,
            options=options,
            name=f"etl-worker-{index}",
            wait_for=wait_for,
            target_hold=target_hold,
        )
        if events is None:
            loader.on_file_done = _log_file
        else:
            loader.on_file_done = lambda r: events.put(
                (r.path, r.rows_loaded, loader.lock_wait_s)
            )
        return loader.load(group)
    finally:
        manager.close()


def _log_file(report: FileReport) -> None:
    """One plain line per settled file."""
    log.info(
        "%s: %s, %d loaded, %d quarantined, %d skipped (%s)",
        report.path,
        report.status,
        report.rows_loaded,
        report.rows_rejected,
        report.rows_skipped,
        report.format,
    )


def _exit_with_parent() -> None:
    """A worker ends when the process that started it is gone.

    Killing `fluxion etl load` must not leave workers taking turns on the
    file with nobody to report to. What they committed stays; a rerun
    resumes the rest.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_remote(*args: Any) -> dict[str, Any]:
    _exit_with_parent()
    # A spawned worker starts with no logging set up: this is its edge.
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    return asdict(_run(*args))


def _from_dict(data: dict[str, Any]) -> LoadReport:
    files = [FileReport(**f) for f in data.pop("files")]
    return LoadReport(files=files, **data)
