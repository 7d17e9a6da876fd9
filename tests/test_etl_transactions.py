"""How the loader sizes its write transactions from a target hold time."""

from __future__ import annotations

import duckdb
import pytest

from etl.generate import generate_exports
from etl.loader import Loader, expand_paths, next_txn_rows
from lockmanager import DuckDBWriteLockManager, LeaseConfig

ROW_GROUP = 122_880


def test_next_size_moves_halfway_towards_the_target_at_the_rate_seen():
    # 500k rows in 1 s is 500k rows/s: a 0.5 s target aims at 250k rows.
    got = next_txn_rows(
        400_000, 500_000, 1.0, target=0.5, smallest=1_000, largest=10**7
    )
    assert got == (400_000 + 250_000) // 2


@pytest.mark.parametrize(
    ("current", "rows", "held", "want"),
    [
        (491_520, 200_000, 0.001, 983_040),  # very fast: capped at the largest
        (ROW_GROUP, 200_000, 100.0, ROW_GROUP),  # very slow: never below a chunk
        (491_520, 1_000, 0.5, 491_520),  # too small a write to measure
        (491_520, 200_000, 0.0, 491_520),  # no time measured: unchanged
    ],
)
def test_next_size_stays_within_its_bounds(current, rows, held, want):
    got = next_txn_rows(
        current, rows, held, target=0.5, smallest=ROW_GROUP, largest=983_040
    )
    assert got == want


@pytest.mark.slow
@pytest.mark.parametrize(("target", "fewest", "most"), [(1e-9, 10, 11), (60.0, 2, 3)])
def test_the_target_hold_decides_how_many_transactions_a_load_takes(
    redis_url, tmp_path, key_prefix, target, fewest, most
):
    """The first transaction takes eight chunks. After it a tiny target
    halves the size each time down to one chunk (8, 4, 2, 1, 1...), and a
    generous one gathers all the rest."""
    generate_exports(tmp_path / "in", stores=4, rows_per_store=5_000)
    files = expand_paths([tmp_path / "in"])
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config, name="etl")
    try:
        report = Loader(mgr, chunk_rows=1_000, target_hold=target).load(files)
    finally:
        mgr.close()

    summary = report.as_dict()
    assert summary["rows_loaded"] == 20_000 and summary["reconciled"]
    assert fewest <= summary["write_transactions"] <= most
    assert summary["longest_transaction_s"] > 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        lotes = con.execute("SELECT count(DISTINCT lote) FROM ventas_raw").fetchone()
        batches = con.execute("SELECT count(*) FROM etl_batches").fetchone()
    finally:
        con.close()
    assert lotes == batches == (20,)  # one batch per chunk, however grouped


def test_a_target_hold_must_be_positive(redis_url, tmp_path, key_prefix):
    mgr = DuckDBWriteLockManager(
        redis_url, tmp_path / "x.duckdb", config=LeaseConfig(key_prefix=key_prefix)
    )
    try:
        with pytest.raises(ValueError, match="target_hold"):
            Loader(mgr, target_hold=0)
    finally:
        mgr.close()


def test_an_error_in_the_parsing_thread_stops_the_load_loudly(
    redis_url, tmp_path, key_prefix
):
    """Not a bad file but a bad call: raised to the caller, never swallowed."""
    generate_exports(tmp_path / "in", stores=2, rows_per_store=100)
    mgr = DuckDBWriteLockManager(
        redis_url, tmp_path / "x.duckdb", config=LeaseConfig(key_prefix=key_prefix)
    )
    try:
        loader = Loader(mgr, force={"colour": "red"})
        with pytest.raises(ValueError, match="cannot force 'colour'"):
            loader.load(expand_paths([tmp_path / "in"]))
    finally:
        mgr.close()


@pytest.mark.slow
def test_a_rerun_that_only_skips_still_lets_a_waiting_reader_in(
    redis_url, tmp_path, key_prefix
):
    """Skipping loaded chunks writes nothing, but must not keep the file."""
    import threading

    generate_exports(tmp_path / "in", stores=4, rows_per_store=50_000)
    files = expand_paths([tmp_path / "in"])
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config, name="etl")
    first = Loader(mgr, chunk_rows=1_000).load(files)
    assert first.as_dict()["rows_loaded"] == 200_000

    stop = threading.Event()
    reads: list[float] = []

    def reader() -> None:
        other = DuckDBWriteLockManager(redis_url, db, config=config, name="reader")
        while not stop.is_set():
            with other.read(wait_for=30) as lease:
                reads.append(lease.wait_s)
        other.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        rerun = Loader(mgr, chunk_rows=1_000, min_turn=0.0).load(files)
    finally:
        stop.set()
        thread.join()
        mgr.close()

    assert rerun.as_dict()["rows_skipped"] == 200_000
    assert rerun.yields >= 1, "the skipping rerun never gave the file to the reader"


@pytest.mark.slow
def test_a_transaction_also_stops_at_its_byte_budget(
    redis_url, tmp_path, key_prefix, monkeypatch
):
    """Wide rows make shorter transactions: here every chunk is over budget."""
    from etl import loader as loader_module

    monkeypatch.setattr(loader_module, "MAX_TXN_BYTES", 1)
    generate_exports(tmp_path / "in", stores=2, rows_per_store=3_000)
    mgr = DuckDBWriteLockManager(
        redis_url, tmp_path / "v.duckdb", config=LeaseConfig(key_prefix=key_prefix)
    )
    try:
        report = Loader(mgr, chunk_rows=1_000, target_hold=60.0).load(
            expand_paths([tmp_path / "in"])
        )
    finally:
        mgr.close()
    # One per chunk, and a last one recording the last file's store-day.
    assert report.as_dict()["write_transactions"] == 7
