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
from tests.etl_support import load_report as _load
from tests.etl_support import read_one

pytestmark = pytest.mark.slow


def _totals(db: Path) -> tuple:
    return read_one(
        db,
        "SELECT count(*), sum(cantidad), sum(monto_total),"
        " count(DISTINCT numero_factura) FROM ventas_raw",
    )


def test_real_exports_load_to_the_manifest_totals_and_reload_adds_nothing(
    shared_data, redis_url, tmp_path, key_prefix
):
    """exports/: 104677 rows, quantity 914726, 1775510.19, 4860 invoices."""
    db = tmp_path / "ventas.duckdb"
    files = expand_paths([shared_data / "exports"])
    config = LeaseConfig(key_prefix=key_prefix)

    first = load_files(
        files, redis_url=redis_url, db_path=str(db), config=config, workers=2
    ).as_dict()
    second = load_files(
        files, redis_url=redis_url, db_path=str(db), config=config, workers=1
    ).as_dict()

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
    # min_turn=0: yield at the first check that sees the reader, however
    # fast this machine loads the 30 files.
    busy = Loader(mgr, chunk_rows=500, min_turn=0.0).load(files[10:])
    stop.set()
    thread.join()
    mgr.close()

    assert busy.turns > 1, "the loader never yielded to the waiting reader"
    assert waits and max(waits) < 5.0


def _batches(db: Path) -> int:
    if not db.exists():
        return 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM etl_batches").fetchone()[0]
    except duckdb.CatalogException:
        return 0
    finally:
        con.close()


def test_corrected_store_day_file_replaces_the_earlier_load(
    shared_data, redis_url, tmp_path, key_prefix
):
    """A re-sent store-day file replaces the first version; the old one stays out."""
    source = shared_data / "exports" / "2010-12-01" / "store_02_2010-12-01.csv"
    header, first, *rest = source.read_text().splitlines(keepends=True)
    fields = first.split(",")
    fields[4] = str(int(fields[4]) + 1000)  # one corrected quantity...
    fields[6] = str(Decimal(fields[4]) * Decimal(fields[5]))  # ...and its total
    corrected = tmp_path / "resent" / source.name
    corrected.parent.mkdir()
    corrected.write_text(header + ",".join(fields) + "".join(rest))
    db = tmp_path / "ventas.duckdb"

    _load([source], redis_url, db, key_prefix)
    before = _totals(db)
    report = _load([corrected], redis_url, db, key_prefix)
    after = _totals(db)
    again = _load([source], redis_url, db, key_prefix)

    assert report["rows_loaded"] == before[0]
    assert after[0] == before[0] and after[1] == before[1] + 1000
    assert again["rows_loaded"] == 0 and _totals(db) == after


def test_a_corrected_re_send_clears_the_bad_rows_of_the_version_it_replaces(
    shared_data, redis_url, tmp_path, key_prefix
):
    """The first version's quarantined line was fixed in the second: gone."""
    source = shared_data / "exports" / "2010-12-01" / "store_02_2010-12-01.csv"
    text = source.read_text()
    first = text.splitlines(keepends=True)[1]
    bad = first.split(",")
    bad[4] = "abc"  # an unreadable quantity
    sent = tmp_path / "sent" / source.name
    sent.parent.mkdir()
    sent.write_text(text + ",".join(bad))
    db = tmp_path / "ventas.duckdb"

    first_load = _load([sent], redis_url, db, key_prefix)
    _load([source], redis_url, db, key_prefix)  # the corrected re-send

    con = duckdb.connect(str(db), read_only=True)
    try:
        left = con.execute("SELECT count(*) FROM etl_quarantine").fetchone()[0]
    finally:
        con.close()
    assert first_load["rows_rejected"] == 1
    assert left == 0


def test_etl_killed_at_any_point_then_rerun_loads_each_row_once(
    shared_data, redis_url, tmp_path, key_prefix
):
    """SIGKILL mid-load (waiting, inside or between chunks), rerun: exact totals."""
    import json
    import os
    import random
    import signal
    import subprocess
    import sys

    days = ["2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05"]
    folders = [str(shared_data / "exports" / day) for day in days]
    manifest = json.loads((shared_data / "manifest.json").read_text())
    want = [f for f in manifest["files"] if f["path"].split("/")[1] in days]
    db = tmp_path / "ventas.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "backend.cli",
        "etl",
        "load",
        *folders,
        "--db",
        str(db),
        "--redis",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--chunk-rows",
        "100",
        # Many small transactions, so the kills below land between them.
        "--target-hold",
        "0.001",
        "--lease-ttl",
        "1",
    ]
    rng = random.Random(4)
    root = Path(__file__).resolve().parents[1]
    progress = []
    # First while it waits for the lease, which the test holds...
    holder = DuckDBWriteLockManager(
        redis_url, db, config=LeaseConfig(key_prefix=key_prefix)
    )
    with holder.write():
        waiting = subprocess.Popen(cmd, cwd=root, stderr=subprocess.DEVNULL)
        time.sleep(3.0)
        os.kill(waiting.pid, signal.SIGKILL)
        waiting.wait()
    holder.close()
    # ...then at random points inside and between chunks.
    for _ in range(5):
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in proc.stderr:  # wait until it is loading, then strike
            if ": loaded," in line:
                break
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        progress.append(_batches(db))
    finished = subprocess.run(
        cmd + ["--json"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    total_batches = _batches(db)
    assert any(0 < n < total_batches for n in progress), (
        f"no kill landed mid-load: batches after each kill {progress},"
        f" {total_batches} in all"
    )

    rows, quantity, total, invoices = _totals(db)
    assert rows == sum(f["rows"] for f in want)
    assert quantity == sum(f["sum_quantity"] for f in want)
    expected_total = sum(Decimal(f["sum_line_total"]) for f in want)
    assert Decimal(total).quantize(Decimal("0.01")) == expected_total.quantize(
        Decimal("0.01")
    )
    assert invoices == sum(f["distinct_invoices"] for f in want)


def test_every_variant_folder_loads_to_its_manifest_totals(
    shared_data, redis_url, tmp_path, key_prefix
):
    """cp1252, `;` with decimal comma, BOM, Spanish header, Spanish Excel."""
    import json

    db = tmp_path / "ventas.duckdb"
    report = _load([shared_data / "variants"], redis_url, db, key_prefix, workers=2)
    groups = json.loads((shared_data / "manifest.json").read_text())["groups"]

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT regexp_extract(f.path, 'variants/([^/]+)/', 1) AS folder,"
        " count(*), sum(v.cantidad), sum(v.monto_total),"
        " count(DISTINCT v.numero_factura)"
        " FROM ventas_raw v JOIN etl_batches b ON b.lote = v.lote"
        " JOIN etl_files f ON f.file_sha = b.file_sha GROUP BY folder"
    ).fetchall()
    con.close()

    assert report["reconciled"] and report["rows_rejected"] == 0
    assert len(rows) == 5
    for folder, count, quantity, total, invoices in rows:
        want = groups[f"variants/{folder}"]
        assert (count, quantity, invoices) == (
            want["rows"],
            want["sum_quantity"],
            want["distinct_invoices"],
        ), folder
        assert Decimal(total).quantize(Decimal("0.01")) == Decimal(
            str(want["sum_line_total"])
        ), folder


def test_bad_rows_are_quarantined_and_unreadable_files_refused_whole(
    redis_url, tmp_path, key_prefix
):
    """Good rows of a file load; bad ones land in etl_quarantine with a reason."""
    header = (
        "location_id,date,invoice_number,product_id,quantity,unit_price,"
        "line_total,description,invoice_time,customer_id,location_name\n"
    )
    good = "2,2011-01-04,536001,85123A,6,2.55,15.30,WHITE HEART,09:01,17850,Germany\n"
    bad_qty = "2,2011-01-04,536001,22752,six,7.65,45.90,SET 7 BABUSHKA,09:01,,Germany\n"
    bad_store = "99,2011-01-04,536002,71053,1,3.39,3.39,LANTERN,09:02,,Nowhere\n"
    exports = tmp_path / "in"
    exports.mkdir()
    (exports / "store_02_2011-01-04.csv").write_text(
        header + good + bad_qty + good + bad_store
    )
    (exports / "store_03_2011-01-04.csv").write_bytes(b"\x00\x01binary\xff" * 20)
    db = tmp_path / "ventas.duckdb"

    report = _load([exports], redis_url, db, key_prefix)

    assert report["rows_read"] == 4 and report["rows_loaded"] == 2
    assert report["rows_rejected"] == 2 and report["reconciled"]
    [refused] = report["files_rejected"]
    assert "store_03" in refused["path"] and "store_03" in refused["reason"]
    con = duckdb.connect(str(db), read_only=True)
    quarantined = con.execute(
        "SELECT linea, raw, reason FROM etl_quarantine ORDER BY linea"
    ).fetchall()
    con.close()
    assert [q[0] for q in quarantined] == [3, 5]
    assert quarantined[0][1] == bad_qty.rstrip("\n") and "six" in quarantined[0][2]
    assert "99" in quarantined[1][2]


def test_same_file_loaded_at_once_with_two_chunk_sizes_loads_each_row_once(
    shared_data, redis_url, tmp_path, key_prefix
):
    """Two loaders, different --chunk-rows, same file: exact totals."""
    import threading

    source = shared_data / "exports" / "2010-12-01" / "store_01_2010-12-01.csv"
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)
    reports = []

    def load(size: int) -> None:
        mgr = DuckDBWriteLockManager(redis_url, db, config=config)
        reports.append(Loader(mgr, chunk_rows=size, min_turn=0).load([source]))
        mgr.close()

    threads = [threading.Thread(target=load, args=(n,)) for n in (300, 700)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    rows, quantity, _, _ = _totals(db)
    assert (rows, quantity) == (2949, 23949)
    assert all(r.as_dict()["reconciled"] for r in reports)
    assert sum(r.total("rows_loaded") for r in reports) == 2949


def test_a_day_never_replaces_a_multi_day_file(redis_url, tmp_path, key_prefix):
    """(store, day) comes from the whole file: a 2-day file is no day's file."""
    header = (
        "location_id,date,invoice_number,product_id,quantity,unit_price,"
        "line_total,description,invoice_time,customer_id,location_name\n"
    )

    def row(day: str, n: int) -> str:
        return f"2,{day},5{n:05d},85123A,1,2.55,2.55,HEART,09:01,,Germany\n"

    two_days = tmp_path / "a" / "store_02_2011-01-04.csv"
    two_days.parent.mkdir()
    two_days.write_text(
        header
        + "".join(row("2011-01-04", i) for i in range(5))
        + "".join(row("2011-01-05", i) for i in range(5, 10))
    )
    one_day = tmp_path / "b" / "store_02_2011-01-04.csv"
    one_day.parent.mkdir()
    one_day.write_text(header + "".join(row("2011-01-04", i) for i in range(20, 23)))
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)
    mgr = DuckDBWriteLockManager(redis_url, db, config=config)

    Loader(mgr, chunk_rows=5).load([two_days])
    report = Loader(mgr, chunk_rows=5).load([one_day]).as_dict()
    mgr.close()

    assert report["files_replaced"] == []
    assert _totals(db)[0] == 13


def test_a_re_send_cut_short_is_refused_and_replaces_nothing(
    shared_data, redis_url, tmp_path, key_prefix
):
    """A truncated copy of a loaded day is rejected whole, not a correction."""
    source = shared_data / "exports" / "2010-12-01" / "store_02_2010-12-01.csv"
    data = source.read_bytes()
    cut = tmp_path / "resent" / source.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 3])
    db = tmp_path / "ventas.duckdb"

    first = _load([source], redis_url, db, key_prefix)
    second = _load([cut], redis_url, db, key_prefix)

    assert (
        second["files_rejected"]
        and "cut short" in second["files_rejected"][0]["reason"]
    )
    assert second["files_replaced"] == []
    assert _totals(db)[0] == first["rows_loaded"]
