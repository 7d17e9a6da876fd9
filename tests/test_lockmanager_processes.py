"""Several real processes, one DuckDB file, one real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from lockmanager import DuckDBWriteLockManager, LeaseConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _prepare(redis_url: str, db: Path, prefix: str) -> None:
    config = LeaseConfig(key_prefix=prefix)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config)
    with mgr.write() as lease, lease.transaction() as cur:
        cur.execute("CREATE SEQUENCE commit_no")
        cur.execute(
            "CREATE TABLE acks (n BIGINT DEFAULT nextval('commit_no'),"
            " writer VARCHAR, seq BIGINT, fence BIGINT, rows BIGINT)"
        )
    mgr.close()


def _spawn(action, role, redis_url, db, prefix, out=None, **extra):
    cmd = [
        sys.executable,
        "-m",
        "tests.workers",
        action,
        "--role",
        role,
        "--redis",
        redis_url,
        "--db",
        str(db),
        "--prefix",
        prefix,
    ]
    if out is not None:
        cmd += ["--out", str(out)]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _overlaps(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_processes_take_turns_without_lock_errors_or_overlap(
    redis_url, tmp_path, key_prefix
):
    """Readers, writers and an ETL for 10 s: safe, fenced, nothing lost."""
    db = tmp_path / "shared.duckdb"
    _prepare(redis_url, db, key_prefix)
    roles = ["reader", "reader", "writer", "writer", "etl"]
    outs = [tmp_path / f"{i}-{r}.jsonl" for i, r in enumerate(roles)]
    procs = [
        _spawn("churn", r, redis_url, db, key_prefix, out=o, seconds=10)
        for r, o in zip(roles, outs)
    ]
    results = [p.communicate(timeout=120) for p in procs]

    for proc, (_, err) in zip(procs, results):
        assert "Could not set lock" not in err and "Conflicting lock" not in err
        assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for o in outs for line in o.read_text().splitlines()]
    turns = [r for r in records if r["kind"] == "turn"]
    acks = {(r["writer"], r["seq"]) for r in records if r["kind"] == "ack"}
    assert sum(t["mode"] == "exclusive" for t in turns) >= 10
    assert sum(t["mode"] == "shared" for t in turns) >= 10

    writes = [t for t in turns if t["mode"] == "exclusive"]
    for w in writes:
        clashes = [t for t in turns if t is not w and _overlaps(w, t)]
        assert clashes == [], f"{w} overlapped {clashes[:3]}"

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT n, writer, seq, fence FROM acks ORDER BY n").fetchall()
    con.close()
    assert acks <= {(w, s) for _, w, s, _ in rows}
    fences = [f for *_, f in rows]
    assert fences == sorted(fences)
    by_fence: dict[int, set[str]] = {}
    for _, writer, _, fence in rows:
        by_fence.setdefault(fence, set()).add(writer)
    assert all(len(w) == 1 for w in by_fence.values()), "two writers shared a fence"


def test_killed_holder_frees_the_file_within_its_ttl(redis_url, tmp_path, key_prefix):
    """SIGKILL mid-lease: the next writer gets the file within the TTL."""
    db = tmp_path / "kill.duckdb"
    _prepare(redis_url, db, key_prefix)
    holder = _spawn("hold", "holder", redis_url, db, key_prefix, ttl=1.5)
    assert holder.stdout.readline().startswith("ready")

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed_at = time.monotonic()
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.5)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config)
    with mgr.write(wait_for=10) as lease:
        waited = time.monotonic() - killed_at
        committed = (
            lease.cursor()
            .execute("SELECT count(*) FROM acks WHERE writer = 'held'")
            .fetchone()
        )
    mgr.close()

    assert waited < 1.5 + 1.0
    assert committed == (1,)


def test_paused_holder_past_its_ttl_cannot_commit(redis_url, tmp_path, key_prefix):
    """SIGSTOP past the TTL, then SIGCONT: the stale holder's write is refused,
    and the waiter that was granted meanwhile gets the file once it closes."""
    db = tmp_path / "pause.duckdb"
    _prepare(redis_url, db, key_prefix)
    holder = _spawn("hold", "holder", redis_url, db, key_prefix, ttl=1.0)
    assert holder.stdout.readline().startswith("ready")
    holder.send_signal(signal.SIGSTOP)
    time.sleep(1.6)

    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.0)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config)
    holder.send_signal(signal.SIGCONT)
    holder.stdin.write("write\n")
    holder.stdin.flush()
    with mgr.write(wait_for=10) as lease:
        stale = (
            lease.cursor()
            .execute("SELECT count(*) FROM acks WHERE writer = 'stale'")
            .fetchone()
        )
    out, err = holder.communicate(timeout=30)
    mgr.close()

    assert "refused LeaseLost" in out, out + err
    assert stale == (0,)
