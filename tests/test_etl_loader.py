"""Loading real store exports into DuckDB under leases, exactly once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from etl.loader import Loader, expand_paths
from etl.parallel import load_files
from lockmanager import DuckDBWriteLockManager, LeaseConfig

pytestmark = pytest.mark.slow


def _totals(db: Path) -> tuple:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT count(*), sum(cantidad), sum(monto_total),"
            " count(DISTINCT numero_factura) FROM ventas_raw"
        ).fetchone()
    finally:
        con.close()


def test_real_exports_load_to_the_manifest_totals_and_reload_adds_nothing(
    shared_data, redis_url, tmp_path, key_prefix
):
    """exports/: 104677 rows, quantity 914726, 1775510.19, 4860 invoices."""
    db = tmp_path / "ventas.duckdb"
    files = expand_paths([shared_data / "exports"])
    config = LeaseConfig(key_prefix=key_prefix)

    first = load_files(files, redis_url=redis_url, db_path=str(db), config=config,
                       workers=2).as_dict()
    second = load_files(files, redis_url=redis_url, db_path=str(db), config=config,
                        workers=1).as_dict()

    rows, quantity, total, invoices = _totals(db)
    assert (rows, quantity, invoices) == (104677, 914726, 4860)
    assert Decimal(total).quantize(Decimal("0.01")) == Decimal("1775510.19")
    assert first["rows_loaded"] == 104677 and first["reconciled"]
    assert first["files_rejected"] == [] and first["rows_rejected"] == 0
    assert second["rows_loaded"] == 0 and second["rows_skipped"] == 104677
    assert second["reconciled"]


def test_loader_yields_between_chunks_only_when_someone_waits(
    shared_data, redis_url, tmp_path, key_prefix
):
    """Alone, the ETL keeps its lease; a waiting reader gets in after one chunk."""
    db = tmp_path / "ventas.duckdb"
    files = expand_paths([shared_data / "exports"])[:40]
    config = LeaseConfig(key_prefix=key_prefix)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config, name="etl")
    alone = Loader(mgr, chunk_rows=500).load(files[:10])
    assert alone.turns == 1  # nobody waited: one turn for all the chunks

    waits: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        other = DuckDBWriteLockManager(redis_url, db, config=config, name="reader")
        while not stop.is_set():
            with other.read(wait_for=30) as lease:
                waits.append(lease.wait_s)
            time.sleep(0.05)
        other.close()

    thread = threading.Thread(target=reader)
    thread.start()
    busy = Loader(mgr, chunk_rows=500).load(files[10:])
    stop.set()
    thread.join()
    mgr.close()

    assert busy.turns > 1, "the loader never yielded to the waiting reader"
    assert waits and max(waits) < 5.0
