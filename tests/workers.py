"""Child processes for the multi-process tests (run as `python -m tests.workers`).

Each worker records every turn it held as one JSON line: role, pid, mode,
fence, and the monotonic times (system-wide on Linux) right after the grant
and right before the release, so the parent can check that no two turns
overlapped where they must not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lockmanager import DuckDBWriteLockManager, LeaseConfig, LeaseLost, Mode, Priority


def _manager(args: argparse.Namespace) -> DuckDBWriteLockManager:
    config = LeaseConfig(key_prefix=args.prefix, lease_ttl=args.ttl, wait_for=30)
    return DuckDBWriteLockManager(args.redis, args.db, config=config, name=args.role)


def _record(out, **fields) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def churn(args: argparse.Namespace) -> int:
    """Take turns until the deadline; readers read, writers insert acks."""
    mgr = _manager(args)
    end = time.monotonic() + args.seconds
    seq = 0
    mode = Mode.SHARED if args.role == "reader" else Mode.EXCLUSIVE
    prio = Priority.BATCH if args.role == "etl" else Priority.INTERACTIVE
    with open(args.out, "a") as out:
        while time.monotonic() < end:
            lease = mgr.acquire(mode, priority=prio)
            start = time.monotonic()
            try:
                seq = _work(args, lease, mode, seq, out)
            except LeaseLost:
                pass  # paused past the TTL: the write was refused, as it must be
            finally:
                # A turn that outlived its lease (the process was paused)
                # is flagged: its interval may overlap the next holder's.
                lost = not mgr._status(lease.token).held
                _record(
                    out,
                    kind="turn",
                    role=args.role,
                    pid=os.getpid(),
                    mode=mode.value,
                    fence=lease.fence,
                    start=start,
                    end=time.monotonic(),
                    lost=lost,
                )
                mgr.release(lease)
            time.sleep(args.pause)
    mgr.close()
    return 0


def _work(args: argparse.Namespace, lease, mode: Mode, seq: int, out) -> int:
    if mode is Mode.SHARED:
        lease.cursor().execute("SELECT count(*) FROM acks").fetchone()
        return seq
    writer = f"{args.role}-{os.getpid()}"
    rows = 2000 if args.role == "etl" else 1
    for chunk in range(20):
        seq += 1
        with lease.transaction() as cur:
            cur.execute(
                "INSERT INTO acks (writer, seq, fence, rows) VALUES (?, ?, ?, ?)",
                [writer, seq, lease.fence, rows],
            )
        _record(out, kind="ack", writer=writer, seq=seq)
        if args.role != "etl" or lease.contended:
            break
    return seq


def hold(args: argparse.Namespace) -> int:
    """Take a write lease, commit one row, say "ready", then obey stdin."""
    mgr = _manager(args)
    lease = mgr.acquire(Mode.EXCLUSIVE)
    with lease.transaction() as cur:
        cur.execute(
            "INSERT INTO acks (writer, seq, fence, rows) VALUES ('held', 1, ?, 1)",
            [lease.fence],
        )
    print("ready", lease.fence, flush=True)
    for line in sys.stdin:
        if line.strip() == "write":
            try:
                with lease.transaction() as cur:
                    cur.execute(
                        "INSERT INTO acks (writer, seq, fence, rows)"
                        " VALUES ('stale', 2, ?, 1)",
                        [lease.fence],
                    )
                print("committed", flush=True)
            except Exception as exc:  # report the class to the parent
                print("refused", type(exc).__name__, flush=True)
            mgr.release(lease)
            print("released", flush=True)
            return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["churn", "hold"])
    parser.add_argument("--role", default="writer")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.01)
    parser.add_argument("--out", default=os.devnull)
    args = parser.parse_args()
    return churn(args) if args.action == "churn" else hold(args)


if __name__ == "__main__":
    sys.exit(main())
