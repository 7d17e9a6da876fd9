"""`fluxion demo`: the main job end to end, and the proof that it held.

Starts (or uses) Redis, starts the backend as its own process, loads the
store exports with parallel ETL processes while a traffic generator reads
dashboards and writes users and orders, then checks every invariant:

- no DuckDB lock error anywhere (backend log, HTTP bodies, ETL);
- no backend 5xx, no failed request;
- every acknowledged user and order is in the file, as acknowledged;
- the ETL reconciles (read = loaded + rejected + skipped), and the rows in
  `ventas_raw` from these files match the exports' manifest exactly
  (rows, quantity, line totals to the cent, invoices), when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from etl.loader import expand_paths
from etl.parallel import load_files
from lockmanager import DuckDBWriteLockManager, LeaseConfig
from lockmanager.private_redis import PrivateRedis, free_port, start_private_redis

from .traffic import LOCK_ERROR_MARKERS, Traffic, percentile

log = logging.getLogger("fluxion.demo")


@dataclass(frozen=True)
class DemoOptions:
    data: Path | None
    db: Path | None
    redis_url: str | None
    workers: int = 4
    days: int = 2
    rows_per_store: int = 20_000
    clients: int = 8
    port: int = 0
    key_prefix: str = "fluxion"
    wait: float = 10.0
    keep: bool = False


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    if opts.data is not None and not opts.data.exists():
        raise FileNotFoundError(
            f"--data {opts.data}: no such folder (relative paths start from"
            f" {Path.cwd()})"
        )
    workdir = Path(tempfile.mkdtemp(prefix="fluxion-demo-"))
    try:
        report = _run(opts, workdir)
    finally:
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["work_folder"] = str(workdir) if opts.keep else None
    return report


def _run(opts: DemoOptions, workdir: Path) -> dict[str, Any]:
    private: PrivateRedis | None = None
    backend: subprocess.Popen[bytes] | None = None
    redis_url = opts.redis_url
    if not redis_url:
        private = start_private_redis()
        redis_url = private.url
        log.info("no REDIS_URL: using a private %s at %s", private.kind, redis_url)
    try:
        db = opts.db or workdir / "fluxion.duckdb"
        data = opts.data or _generate(workdir / "exports", opts)
        files = expand_paths([data])
        log.info("%d export files from %s into %s", len(files), data, db)
        config = LeaseConfig(key_prefix=opts.key_prefix)

        port = opts.port or free_port()
        backend_log = workdir / "backend.log"
        backend = _start_backend(
            db, redis_url, port, opts.key_prefix, backend_log, opts.wait
        )
        base_url = f"http://127.0.0.1:{port}"
        traffic = Traffic(base_url, clients=opts.clients, days=_day_range(files))
        traffic.start()

        etl_started = time.monotonic()
        etl = load_files(
            files,
            redis_url=redis_url,
            db_path=str(db),
            config=config,
            workers=opts.workers,
        )
        etl_seconds = time.monotonic() - etl_started
        time.sleep(1.0)  # a little traffic after the load, too
        seen = traffic.stop()
        _stop(backend)
        backend = None

        return _report(
            opts,
            db,
            redis_url,
            config,
            files,
            etl.as_dict(),
            etl_seconds,
            seen,
            backend_log,
        )
    finally:
        if backend is not None:
            _stop(backend)
        if private is not None:
            private.stop()


def _generate(out: Path, opts: DemoOptions) -> Path:
    from etl.generate import generate_exports

    log.info(
        "no --data: generating 16 stores x %d days x %d rows under %s",
        opts.days,
        opts.rows_per_store,
        out,
    )
    generate_exports(
        out,
        stores=16,
        start=date(2026, 1, 5),
        ndays=opts.days,
        rows_per_store=opts.rows_per_store,
        seed=7,
        formats="mixed",
    )
    return out


def _day_range(files: list[Path]) -> tuple[date, date]:
    days = []
    for path in files:
        try:
            days.append(date.fromisoformat(path.stem[-10:]))
        except ValueError:
            continue
    if not days:
        today = date.today()
        return today - timedelta(days=30), today
    return min(days), max(days)


def _start_backend(
    db: Path, redis_url: str, port: int, prefix: str, log_path: Path, wait: float
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        FLUXION_DB=str(db),
        REDIS_URL=redis_url,
        FLUXION_ADMIN_TOKEN=env.get("FLUXION_ADMIN_TOKEN") or secrets.token_hex(16),
        FLUXION_KEY_PREFIX=prefix,
        FLUXION_READ_WAIT=str(wait),
        FLUXION_WRITE_WAIT=str(wait),
    )
    cmd = [
        sys.executable,
        "-m",
        "backend.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the backend exited with {proc.returncode}; see {log_path}:\n"
                + log_path.read_text()[-2000:]
            )
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
                == 200
            ):
                log.info("backend up on 127.0.0.1:%d (log: %s)", port, log_path)
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the backend did not answer /health within 60s; see {log_path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def expected_totals(files: list[Path]) -> dict[str, Any] | None:
    """Totals from a `manifest.json` beside the exports, matched by content hash."""
    from etl.formats import file_sha256

    manifest = None
    for folder in [files[0].parent, *files[0].parents][:4] if files else []:
        candidate = folder / "manifest.json"
        if candidate.exists():
            manifest = json.loads(candidate.read_text())
            break
    if manifest is None:
        return None
    by_sha = {entry["sha256"]: entry for entry in manifest.get("files", [])}
    totals = {
        "files": 0,
        "rows": 0,
        "sum_quantity": 0,
        "sum_line_total": Decimal(0),
        "distinct_invoices": 0,
        "shas": [],
    }
    for path in files:
        entry = by_sha.get(file_sha256(path))
        if entry is None:
            return None  # a file the manifest does not know: no exact check
        totals["files"] += 1
        totals["shas"].append(entry["sha256"])
        for name in ("rows", "sum_quantity", "distinct_invoices"):
            totals[name] += int(entry[name])
        totals["sum_line_total"] += Decimal(str(entry["sum_line_total"]))
    return totals


def _loaded_totals(
    db: Path, redis_url: str, config: LeaseConfig, shas: list[str]
) -> tuple[dict[str, Any], set[int], dict[int, tuple[Any, ...]]]:
    mgr = DuckDBWriteLockManager(redis_url, db, config=config, name="demo-check")
    try:
        with mgr.read() as lease:
            cur = lease.cursor()
            row = cur.execute(
                "SELECT count(*), coalesce(sum(cantidad), 0),"
                " coalesce(sum(monto_total), 0), count(DISTINCT numero_factura)"
                " FROM ventas_raw WHERE lote IN (SELECT lote FROM etl_batches"
                " WHERE list_contains(?::VARCHAR[], file_sha))",
                [shas],
            ).fetchone()
            users = {r[0] for r in cur.execute("SELECT id FROM usuarios").fetchall()}
            orders = {
                r[0]: r[1:]
                for r in cur.execute(
                    "SELECT id, usuario_id, ubicacion_id, producto_id, cantidad,"
                    " estado FROM pedidos"
                ).fetchall()
            }
    finally:
        mgr.close()
    totals = {
        "rows": int(row[0]),
        "sum_quantity": int(row[1]),
        "sum_line_total": Decimal(row[2]).quantize(Decimal("0.01")),
        "distinct_invoices": int(row[3]),
    }
    return totals, users, orders


def _report(
    opts: DemoOptions,
    db: Path,
    redis_url: str,
    config: LeaseConfig,
    files: list[Path],
    etl: dict[str, Any],
    etl_seconds: float,
    seen: Any,
    backend_log: Path,
) -> dict[str, Any]:
    expected = expected_totals(files)
    from etl.formats import file_sha256

    shas = expected["shas"] if expected else [file_sha256(p) for p in files]
    loaded, users, orders = _loaded_totals(db, redis_url, config, shas)
    missing_users = sorted(set(seen.users) - users)
    wrong_orders = sorted(
        oid
        for oid, body in seen.orders.items()
        if orders.get(oid)
        != (
            body["usuario_id"],
            body["ubicacion_id"],
            body["producto_id"],
            body["cantidad"],
            body["estado"],
        )
    )
    log_text = backend_log.read_text(errors="replace")
    lock_errors = (
        seen.lock_errors
        + etl["lock_errors"]
        + sum(log_text.count(m) for m in LOCK_ERROR_MARKERS)
    )
    totals_match = None
    if expected is not None:
        want = {k: expected[k] for k in loaded}
        want["sum_line_total"] = Decimal(want["sum_line_total"]).quantize(
            Decimal("0.01")
        )
        totals_match = want == loaded
    unanswered = sum(1 for e in seen.errors if not e[:3].isdigit())
    backend_errors = unanswered + sum(
        n for status, n in seen.statuses.items() if status >= 500
    )
    requests = len(seen.read_ms) + len(seen.write_ms)
    checks = {
        "no_lock_errors": lock_errors == 0,
        "no_backend_errors": backend_errors == 0,
        "acknowledged_writes_present": not missing_users and not wrong_orders,
        "etl_reconciled": bool(etl["reconciled"]),
        "every_file_loaded": not etl["files_rejected"],
        "totals_match_manifest": totals_match,
    }
    ok = all(v is not False for v in checks.values()) and requests > 0
    return {
        "ok": ok,
        "checks": checks,
        "db": str(db),
        "rows_read": etl["rows_read"],
        "rows_loaded": etl["rows_loaded"],
        "rows_rejected": etl["rows_rejected"],
        "rows_skipped": etl["rows_skipped"],
        "files_rejected": etl["files_rejected"],
        "lock_errors": lock_errors,
        "reconciled": bool(etl["reconciled"]),
        "totals": {k: str(v) for k, v in loaded.items()},
        "expected": None
        if expected is None
        else {k: str(v) for k, v in expected.items() if k != "shas"},
        "backend": {
            "wait_budget_s": opts.wait,
            "requests": requests,
            "errors": backend_errors,
            "statuses": {str(k): v for k, v in sorted(seen.statuses.items())},
            "read_p50_ms": percentile(seen.read_ms, 50),
            "read_p99_ms": percentile(seen.read_ms, 99),
            "write_p50_ms": percentile(seen.write_ms, 50),
            "write_p99_ms": percentile(seen.write_ms, 99),
            "users_acknowledged": len(seen.users),
            "orders_acknowledged": len(seen.orders),
            "missing_users": missing_users[:20],
            "wrong_orders": wrong_orders[:20],
            "first_errors": seen.errors[:5],
        },
        "etl": {
            "files": etl["files"],
            "workers": opts.workers,
            "seconds": round(etl_seconds, 3),
            "rows_per_s": round(etl["rows_loaded"] / etl_seconds) if etl_seconds else 0,
            "lock_wait_s": etl["lock_wait_s"],
            "write_turns": etl["write_turns"],
        },
    }


def _mark(passed: bool | None) -> str:
    return "--" if passed is None else ("ok" if passed else "FAIL")


def render_summary(report: dict[str, Any]) -> str:
    """The report for a person: what held, and the figures that matter."""
    back, etl = report["backend"], report["etl"]
    lines = [
        "",
        f"fluxion demo: {'OK' if report['ok'] else 'FAILED'}",
        *(f"  [{_mark(v)}] {k.replace('_', ' ')}" for k, v in report["checks"].items()),
        f"  ETL: {report['rows_loaded']} rows from {etl['files']} files with"
        f" {etl['workers']} workers in {etl['seconds']}s ({etl['rows_per_s']}"
        f" rows/s), lock wait {etl['lock_wait_s']}s over {etl['write_turns']} turns",
        f"  rows read {report['rows_read']} = loaded {report['rows_loaded']}"
        f" + quarantined {report['rows_rejected']} + skipped {report['rows_skipped']};"
        f" files rejected {len(report['files_rejected'])}",
        f"  backend: {back['requests']} requests, {back['errors']} errors;"
        f" read p50 {back['read_p50_ms']} ms, p99 {back['read_p99_ms']} ms;"
        f" write p50 {back['write_p50_ms']} ms, p99 {back['write_p99_ms']} ms"
        f" (wait budget {back['wait_budget_s']}s)",
        f"  lock errors: {report['lock_errors']}",
    ]
    if report["expected"] is None:
        lines.append("  no manifest.json beside the exports: totals not checked")
    else:
        lines.append(
            f"  totals: {report['totals']} (manifest agrees:"
            f" {report['checks']['totals_match_manifest']})"
        )
    return "\n".join(lines)
