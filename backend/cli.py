"""The `fluxion` command: the application edge.

Settings come from the environment (`FLUXION_DB`, `REDIS_URL`,
`FLUXION_ADMIN_TOKEN`) and from options, which win; they are read here and
passed down, never read deeper in the code. `--json` prints a machine report
as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etl.defaults import DEFAULT_TARGET_HOLD

# `fluxion etl load` ended, but refused some files whole (their stores must
# send them again); 1 is an interrupted load, 2 a usage or setup error.
EXIT_FILES_REJECTED = 3

log = logging.getLogger("fluxion")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="DuckDB file (default: $FLUXION_DB)")
    parser.add_argument("--redis", help="Redis URL (default: $REDIS_URL)")
    parser.add_argument("--json", action="store_true", help="machine report last")
    parser.add_argument("--key-prefix", default="fluxion", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxion",
        description="Share one DuckDB file between a web backend and an ETL.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job end to end, with a report")
    _common(demo)
    demo.add_argument("--data", help="folder of store exports (default: generate)")
    demo.add_argument("--workers", type=int, default=4, help="ETL processes")
    demo.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds a backend request may wait for its lease (default 10)",
    )
    demo.add_argument("--days", type=int, default=2, help="generated days")
    demo.add_argument("--rows-per-store", type=int, default=20_000)
    demo.add_argument("--clients", type=int, default=8, help="traffic threads")
    demo.add_argument("--port", type=int, default=0, help="backend port (0: free)")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's work folder (generated exports, logs, database)",
    )

    gen = sub.add_parser("generate", help="write realistic store exports")
    gen.add_argument("dir")
    gen.add_argument("--stores", type=int, default=16, help="stores 1..N (16)")
    gen.add_argument("--days", type=int, default=1, help="consecutive days (1)")
    gen.add_argument(
        "--start", default="2026-01-05", help="first day, YYYY-MM-DD (2026-01-05)"
    )
    gen.add_argument(
        "--rows-per-store",
        type=int,
        default=200_000,
        help="rows in each store's daily file (200000)",
    )
    gen.add_argument("--seed", type=int, default=0, help="same seed, same bytes (0)")
    gen.add_argument(
        "--mixed",
        action="store_true",
        help="mix the formats stores really send (encodings, separators,"
        " decimal commas, Spanish headers, dd/mm dates)",
    )
    gen.add_argument("--json", action="store_true")

    serve = sub.add_parser("serve", help="run the backend (uvicorn)")
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    etl = sub.add_parser("etl", help="load store exports")
    etl_sub = etl.add_subparsers(dest="etl_command", required=True)
    load = etl_sub.add_parser(
        "load",
        help="load files or folders of exports",
        epilog="exit status: 0 every file loaded (or already loaded); 1 the"
        " load was interrupted, rerun to resume; 2 a usage or setup error;"
        f" {EXIT_FILES_REJECTED} finished, but some files were rejected whole"
        " (listed last, with the reason)",
    )
    _common(load)
    load.add_argument("paths", nargs="+")
    load.add_argument(
        "--workers", type=_positive(int), default=1, help="loader processes (1)"
    )
    load.add_argument(
        "--chunk-rows",
        type=_positive(int),
        default=None,
        help="rows per chunk (batch) of a file loaded for the first time"
        " (122880, one DuckDB row group)",
    )
    load.add_argument(
        "--format",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="force a detected format field instead of detecting it, e.g."
        " encoding=cp1252, delimiter=';', decimal=',', date_format=dmy",
    )
    load.add_argument(
        "--wait",
        type=_positive(float),
        default=600.0,
        help="seconds one write turn may be waited for before the load stops"
        " with a report (default 600); rerun to resume",
    )
    load.add_argument(
        "--target-hold",
        type=_positive(float),
        default=DEFAULT_TARGET_HOLD,
        help="seconds each write transaction should hold the file, which is"
        " about how long a backend request waits for the ETL (default"
        f" {DEFAULT_TARGET_HOLD}); never less than one chunk of rows, so on a"
        " slow or busy machine it can be longer; longer loads faster",
    )
    load.add_argument(
        "--lease-ttl",
        type=_positive(float),
        default=10.0,
        help="seconds a lease lives without renewal; a crashed loader frees"
        " the file this long after its last renewal (default 10)",
    )

    locks = sub.add_parser("locks", help="holders, waiters and recent history")
    _common(locks)
    locks.add_argument("--history", type=int, default=20)
    locks.add_argument("--watch", type=float, default=0, metavar="SECONDS")
    return parser


def _required(value: str | None, option: str, variable: str) -> str:
    if value:
        return value
    raise SystemExit(f"fluxion: no {option} given; pass {option} or set {variable}")


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "verbose", False):
        # One line per HTTP request (the demo's traffic) buries the report.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    command = args.command if args.command != "etl" else "etl_load"
    try:
        return int(_COMMANDS[command](args, environ) or 0)
    except (KeyboardInterrupt, Exception) as exc:
        if _is_interrupt(exc):
            # Every committed transaction stays, the open one rolls back.
            print(
                f"fluxion {args.command}: interrupted; what committed stays,"
                " rerun to resume",
                file=sys.stderr,
            )
            return 130
        reason = _explain(exc)
        if reason is None:
            raise
        # Expected trouble (a wrong path, a missing setting, Redis down):
        # one line that says what and how to fix it, not a traceback.
        print(f"fluxion {args.command}: {reason}", file=sys.stderr)
        return 2


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes of a library, if a command imported it (no cost)."""
    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found else ()


def _is_interrupt(exc: BaseException) -> bool:
    # Ctrl-C inside a DuckDB query comes back as DuckDB's interrupt error,
    # or, inside an Arrow scan, as "Query interrupted".
    if isinstance(exc, (KeyboardInterrupt, *_loaded("duckdb", "InterruptException"))):
        return True
    return isinstance(exc, RuntimeError) and str(exc) == "Query interrupted"


def _explain(exc: BaseException) -> str | None:
    """The one line for an expected error, or None for a bug."""
    if isinstance(exc, _loaded("duckdb", "IOException")):
        return (
            f"{str(exc).removeprefix('IO Error: ')}; check --db / FLUXION_DB"
            " (a DuckDB file, in a folder that exists) and the disk"
        )
    if isinstance(exc, _loaded("redis", "RedisError")):
        return (
            f"cannot reach Redis ({exc}); start it, or point --redis /"
            " REDIS_URL at a running one"
        )
    expected = (
        FileNotFoundError,
        ValueError,
        *_loaded("lockmanager", "LockManagerError"),
    )
    return str(exc) if isinstance(exc, expected) else None


def _emit(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, default=str))


def cmd_generate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from datetime import date

    from etl.generate import generate_exports

    started = time.monotonic()
    files = generate_exports(
        Path(args.dir),
        stores=args.stores,
        start=date.fromisoformat(args.start),
        ndays=args.days,
        rows_per_store=args.rows_per_store,
        seed=args.seed,
        formats="mixed" if args.mixed else "canonical",
    )
    took = time.monotonic() - started
    print(f"wrote {len(files)} files under {args.dir} in {took:.1f}s", file=sys.stderr)
    _emit({"files": len(files), "dir": args.dir, "seconds": round(took, 2)}, args.json)
    return 0


def cmd_serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .serve import run
    from .settings import Settings

    env = dict(environ)
    env["FLUXION_DB"] = _required(
        args.db or env.get("FLUXION_DB"), "--db", "FLUXION_DB"
    )
    env["REDIS_URL"] = _required(
        args.redis or env.get("REDIS_URL"), "--redis", "REDIS_URL"
    )
    if args.key_prefix != "fluxion":
        env["FLUXION_KEY_PREFIX"] = args.key_prefix
    settings = Settings.from_env(env)
    run(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def cmd_etl_load(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from etl.loader import DEFAULT_CHUNK_ROWS, expand_paths
    from etl.parallel import load_files
    from lockmanager import LeaseConfig

    db = _required(args.db or environ.get("FLUXION_DB"), "--db", "FLUXION_DB")
    redis_url = _required(
        args.redis or environ.get("REDIS_URL"), "--redis", "REDIS_URL"
    )
    paths = expand_paths(args.paths)
    force = _parse_force(args.format)
    report = load_files(
        paths,
        redis_url=redis_url,
        db_path=db,
        config=LeaseConfig(key_prefix=args.key_prefix, lease_ttl=args.lease_ttl),
        workers=args.workers,
        chunk_rows=args.chunk_rows or DEFAULT_CHUNK_ROWS,
        force=force,
        wait_for=args.wait,
        target_hold=args.target_hold,
        progress=sys.stderr.isatty() and not args.verbose,
    )
    summary = report.as_dict()
    for file in summary["per_file"]:
        if file["rows_rejected"]:
            print(
                f"quarantined: {file['path']}: {file['rows_rejected']} rows, e.g."
                f" {'; '.join(file['quarantine_sample'])} (all of them, with"
                " the raw line, are in the etl_quarantine table)",
                file=sys.stderr,
            )
    for rejected in summary["files_rejected"]:
        print(f"rejected: {rejected['reason']}", file=sys.stderr)
    if summary["degraded_turns"]:
        print(
            f"WARNING: {summary['degraded_turns']} write turns were taken without"
            f" Redis ({redis_url} did not answer): safe, but not fair to the"
            " backend; check the URL or the server",
            file=sys.stderr,
        )
    if summary["interrupted"]:
        print(
            f"interrupted: {summary['interrupted']}; rerun to resume", file=sys.stderr
        )
    for replaced in summary["files_replaced"]:
        print(
            f"replaced: {replaced['path']} replaced the earlier load of store"
            f" {replaced['store']} for {replaced['day']}",
            file=sys.stderr,
        )
    print(
        f"{summary['files']} files: {summary['rows_loaded']} rows loaded,"
        f" {summary['rows_rejected']} quarantined, {summary['rows_skipped']} skipped"
        f" (already loaded), {len(summary['files_rejected'])} files rejected;"
        f" {summary['rows_per_s']} rows/s, lock wait {summary['lock_wait_s']}s;"
        f" {summary['write_transactions']} write transactions, the longest"
        f" {summary['longest_transaction_s']}s",
        file=sys.stderr,
    )
    _emit(summary, args.json)
    if summary["interrupted"] or not summary["reconciled"]:
        return 1
    # Loaded what could be loaded, but a scheduler must notice the rest.
    return EXIT_FILES_REJECTED if summary["files_rejected"] else 0


def _positive(kind: type) -> Any:
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above zero, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _parse_force(items: list[str]) -> dict[str, str] | None:
    force = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SystemExit(
                f"fluxion: --format takes FIELD=VALUE (e.g. encoding=cp1252),"
                f" got {item!r}"
            )
        force[field.strip()] = value
    from etl.formats import check_force

    return check_force(force) or None


def cmd_locks(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockmanager import DuckDBWriteLockManager, LeaseConfig

    from .locks_view import render_table

    db = _required(args.db or environ.get("FLUXION_DB"), "--db", "FLUXION_DB")
    redis_url = _required(
        args.redis or environ.get("REDIS_URL"), "--redis", "REDIS_URL"
    )
    mgr = DuckDBWriteLockManager(
        redis_url, db, config=LeaseConfig(key_prefix=args.key_prefix)
    )
    try:
        while True:
            view = mgr.inspect(history=args.history)
            if args.json:
                print(json.dumps(view, default=str), flush=True)
            else:
                print(render_table(view), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        mgr.close()


def cmd_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .demo import DemoOptions, render_summary, run_demo

    options = DemoOptions(
        data=Path(args.data) if args.data else None,
        db=Path(args.db or environ.get("FLUXION_DB") or "")
        if (args.db or environ.get("FLUXION_DB"))
        else None,
        redis_url=args.redis or environ.get("REDIS_URL"),
        workers=args.workers,
        days=args.days,
        rows_per_store=args.rows_per_store,
        clients=args.clients,
        port=args.port,
        key_prefix=args.key_prefix,
        wait=args.wait,
        keep=args.keep,
    )
    report = run_demo(options)
    print(render_summary(report), file=sys.stderr)
    _emit(report, args.json)
    return 0 if report["ok"] else 1


_COMMANDS = {
    "demo": cmd_demo,
    "generate": cmd_generate,
    "serve": cmd_serve,
    "etl_load": cmd_etl_load,
    "locks": cmd_locks,
}


if __name__ == "__main__":
    sys.exit(main())
