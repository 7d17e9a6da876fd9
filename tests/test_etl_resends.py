"""Corrected re-sends and duplicate files, in one load and across loads."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from lockmanager import LeaseConfig
from tests.etl_support import load_report as _load
from tests.etl_support import read_one

pytestmark = pytest.mark.shared_data

NAME = "store_02_2010-12-01.csv"


def _version(shared_data: Path, folder: Path, quantity: int | None) -> Path:
    """The real store-day file, with its first line's quantity set (None: as sent)."""
    source = shared_data / "exports" / "2010-12-01" / NAME
    target = folder / NAME
    folder.mkdir(parents=True)
    if quantity is None:
        shutil.copy(source, target)
        return target
    header, first, *rest = source.read_text().splitlines(keepends=True)
    fields = first.split(",")
    fields[4] = str(quantity)
    fields[6] = str(quantity * Decimal(fields[5]))
    target.write_text(header + ",".join(fields) + "".join(rest))
    return target


def _rows_and_quantity(db: Path) -> tuple[int, int]:
    rows, quantity = read_one(
        db,
        "SELECT count(*), sum(cantidad) FROM ventas_raw"
        " WHERE ubicacion_id = 2 AND fecha = DATE '2010-12-01'",
    )
    return rows, quantity


@pytest.fixture
def versions(shared_data, tmp_path):
    """As sent (a), then two corrections (b, c) of the same store-day."""
    return {
        v: _version(shared_data, tmp_path / v, q)
        for v, q in (("a", None), ("b", 100), ("c", 200))
    }


def test_each_correction_replaces_the_one_before(
    versions, redis_url, tmp_path, key_prefix
):
    db = tmp_path / "ventas.duckdb"
    shown = []
    for v in "abc":
        _load([versions[v]], redis_url, db, key_prefix)
        shown.append(_rows_and_quantity(db))

    rows, quantity = shown[0]
    assert shown[1] == (rows, quantity - 6 + 100)
    assert shown[2] == (rows, quantity - 6 + 200)  # b is gone, not added to


@pytest.mark.parametrize("first_alone", [False, True])
def test_a_file_and_its_corrections_in_one_load_leave_the_last(
    versions, redis_url, tmp_path, key_prefix, first_alone
):
    """In one load, later files replace earlier ones of the same store-day."""
    db = tmp_path / "ventas.duckdb"
    reference = tmp_path / "reference.duckdb"
    _load([versions["a"]], redis_url, reference, key_prefix)
    rows, quantity = _rows_and_quantity(reference)
    together = [versions[v] for v in "abc"]
    if first_alone:
        _load(together[:1], redis_url, db, key_prefix)
        together = together[1:]

    report = _load(together, redis_url, db, key_prefix)

    assert _rows_and_quantity(db) == (rows, quantity - 6 + 200)
    assert report["files_replaced"][-1]["path"] == str(versions["c"])


def test_the_same_bytes_under_two_names_load_once(
    shared_data, redis_url, tmp_path, key_prefix
):
    folder = tmp_path / "in"
    folder.mkdir()
    day = shared_data / "exports" / "2010-12-01"
    shutil.copy(day / NAME, folder / "a.csv")
    shutil.copy(day / NAME, folder / "b.csv")
    shutil.copy(day / "store_03_2010-12-01.csv", folder)
    db = tmp_path / "ventas.duckdb"

    report = _load([folder], redis_url, db, key_prefix)
    again = _load([folder], redis_url, db, key_prefix)

    status = {Path(f["path"]).name: f["status"] for f in report["per_file"]}
    assert status == {
        "a.csv": "loaded",
        "b.csv": "skipped",
        NAME.replace("02", "03"): "loaded",
    }
    assert report["reconciled"] and again["rows_loaded"] == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        per_store = dict(
            con.execute(
                "SELECT ubicacion_id, count(*) FROM ventas_raw GROUP BY 1"
            ).fetchall()
        )
    finally:
        con.close()
    assert per_store[2] == report["per_file"][0]["rows_loaded"]
    assert set(per_store) == {2, 3}


def test_a_file_rewritten_after_hashing_is_recorded_under_its_new_content(
    tmp_path,
):
    """Hashed, then replaced before its turn to be parsed: hashed again."""
    import queue

    from etl import _reading
    from etl.formats import file_sha256
    from etl.generate import generate_exports
    from etl.report import FileReport

    path = generate_exports(tmp_path, stores=1, rows_per_store=30)[0]
    report = FileReport(path=str(path))
    error, hashed_as = _reading._hash(report)
    assert error is None
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:11]))  # the store rewrote it: 10 rows

    out: queue.Queue = queue.Queue()
    _reading._parse_file(report, hashed_as, {}, 1_000, None, {}, out)

    assert report.sha256 == file_sha256(path)
    items = [out.get() for _ in range(out.qsize())]
    assert items[-1] == (report, "end")
    assert sum(item[1][1].rows_read for item in items[:-1]) == 10


def test_the_complete_file_replaces_the_part_loaded_of_a_cut_one(
    shared_data, redis_url, tmp_path, key_prefix
):
    """Cut short mid-row, refused after some chunks committed; then whole."""
    source = shared_data / "exports" / "2010-12-01" / NAME
    cut = tmp_path / "cut" / NAME
    cut.parent.mkdir()
    cut.write_bytes(source.read_bytes()[:-25])  # ends inside the last row
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)

    from etl.loader import Loader
    from lockmanager import DuckDBWriteLockManager

    mgr = DuckDBWriteLockManager(redis_url, db, config=config, name="etl")
    try:
        # Chunks of 2 rows, soon committed one by one: the refusal comes late.
        Loader(mgr, chunk_rows=2, target_hold=1e-9).load([cut])
        partial = _rows_and_quantity(db)
        Loader(mgr).load([source])
    finally:
        mgr.close()

    reference = tmp_path / "reference.duckdb"
    _load([source], redis_url, reference, key_prefix)
    assert 0 < partial[0] < _rows_and_quantity(reference)[0]
    assert _rows_and_quantity(db) == _rows_and_quantity(reference)


class _Crash(Exception):
    """Stands for a SIGKILL between two transactions of a load."""


def _load_and_crash(redis_url, db, prefix, paths, after, monkeypatch):
    """Load with tiny transactions; crash after `after` of them committed."""
    from etl import loader as loader_module
    from etl.loader import Loader
    from lockmanager import DuckDBWriteLockManager

    real = loader_module.write_pieces
    calls = []

    def counted(*args, **kwargs):
        if len(calls) == after:
            raise _Crash
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loader_module, "write_pieces", counted)
    mgr = DuckDBWriteLockManager(redis_url, db, config=LeaseConfig(key_prefix=prefix))
    try:
        with pytest.raises(_Crash):
            Loader(mgr, chunk_rows=2, target_hold=1e-9).load(paths)
    finally:
        mgr.close()
        monkeypatch.setattr(loader_module, "write_pieces", real)


@pytest.mark.parametrize("together", [True, False])
def test_a_correction_replaces_an_original_whose_load_was_cut_off(
    versions, redis_url, tmp_path, key_prefix, monkeypatch, together
):
    """Half of a loaded when the load died; b arrives; nothing of a stays."""
    db = tmp_path / "ventas.duckdb"
    _load_and_crash(redis_url, db, key_prefix, [versions["a"]], 1, monkeypatch)
    assert 0 < _rows_and_quantity(db)[0] < 29
    if together:
        _load([versions["a"], versions["b"]], redis_url, db, key_prefix)
    else:
        _load([versions["b"]], redis_url, db, key_prefix)
        _load([versions["a"]], redis_url, db, key_prefix)  # the old one, resumed

    reference = tmp_path / "reference.duckdb"
    _load([versions["b"]], redis_url, reference, key_prefix)
    assert _rows_and_quantity(db) == _rows_and_quantity(reference)


def test_a_correction_whose_last_chunk_holds_only_bad_rows_still_replaces(
    shared_data, redis_url, tmp_path, key_prefix
):
    source = shared_data / "exports" / "2010-12-01" / NAME
    header, *lines = source.read_text().splitlines(keepends=True)
    first = tmp_path / "a" / NAME
    first.parent.mkdir()
    first.write_text(header + "".join(lines[:25]))
    bad = lines[25].split(",")
    bad[4] = "x"
    second = tmp_path / "b" / NAME
    second.parent.mkdir()
    second.write_text(header + "".join(lines[:25]) + ",".join(bad))
    db = tmp_path / "ventas.duckdb"
    config = LeaseConfig(key_prefix=key_prefix)

    from etl.loader import Loader
    from lockmanager import DuckDBWriteLockManager

    mgr = DuckDBWriteLockManager(redis_url, db, config=config)
    try:  # chunks of 5 rows: the bad row is alone in the last one
        Loader(mgr, chunk_rows=5).load([first])
        report = Loader(mgr, chunk_rows=5).load([second]).as_dict()
    finally:
        mgr.close()

    assert report["rows_rejected"] == 1 and report["files_replaced"]
    assert _rows_and_quantity(db)[0] == 25


def test_a_refused_correction_leaves_the_old_version_and_reconciles(
    versions, redis_url, tmp_path, key_prefix
):
    cut = tmp_path / "cut" / NAME
    cut.parent.mkdir()
    cut.write_bytes(versions["b"].read_bytes()[:-25])
    db = tmp_path / "ventas.duckdb"
    _load([versions["a"]], redis_url, db, key_prefix)
    before = _rows_and_quantity(db)

    report = _load([cut], redis_url, db, key_prefix)

    assert report["reconciled"] and len(report["files_rejected"]) == 1
    assert _rows_and_quantity(db) == before


def test_a_file_of_several_days_is_never_taken_for_a_day_being_corrected(
    redis_url, tmp_path, key_prefix, monkeypatch
):
    """Half of a two-day file loads, a one-day file of its first day comes,
    the two-day file resumes: every row of both stays (several days never
    replace, nor are replaced)."""
    from etl.generate import generate_exports

    days = generate_exports(tmp_path / "gen", stores=1, ndays=2, rows_per_store=30)
    first, second = (p.read_text().splitlines(keepends=True) for p in days)
    both = tmp_path / "multi" / "store_01_two_days.csv"
    both.parent.mkdir()
    both.write_text("".join(first) + "".join(second[1:]))
    one_day = tmp_path / "one" / days[0].name
    one_day.parent.mkdir()
    one_day.write_text("".join(first[:11]))
    db = tmp_path / "ventas.duckdb"

    _load_and_crash(redis_url, db, key_prefix, [both], 1, monkeypatch)
    partial = read_one(db, "SELECT count(*) FROM ventas_raw")[0]
    _load([one_day], redis_url, db, key_prefix)
    _load([both], redis_url, db, key_prefix)

    assert 0 < partial < 60
    assert read_one(db, "SELECT count(*) FROM ventas_raw") == (60 + 10,)
