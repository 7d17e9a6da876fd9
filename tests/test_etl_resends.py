"""Corrected re-sends and duplicate files, in one load and across loads."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from etl.loader import expand_paths
from etl.parallel import load_files
from lockmanager import LeaseConfig

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


def _load(paths, redis_url, db, prefix):
    return load_files(
        expand_paths(paths),
        redis_url=redis_url,
        db_path=str(db),
        config=LeaseConfig(key_prefix=prefix),
    ).as_dict()


def _rows_and_quantity(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT count(*), sum(cantidad) FROM ventas_raw"
            " WHERE ubicacion_id = 2 AND fecha = DATE '2010-12-01'"
        ).fetchone()
    finally:
        con.close()


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
    _load([versions["a"]], redis_url, reference, key_prefix + "r")
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
