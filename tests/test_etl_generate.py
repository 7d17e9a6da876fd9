"""The export generator: deterministic, exact totals, realistic content."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl.formats import detect_format, read_export
from etl.generate import VARIANTS, generate_exports, load_totals

DAYS = [date(2012, 3, 5), date(2012, 3, 6)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six stores (one per variant) over two days, 4,000 rows each."""
    out = tmp_path_factory.mktemp("mixed")
    generate_exports(
        out, stores=6, days=DAYS, rows_per_store=4_000, seed=3, formats="mixed"
    )
    return out


def read_folder(out: Path) -> tuple[pa.Table, int]:
    tables, rejected = [], 0
    for path in sorted(out.rglob("*.csv")):
        for chunk in read_export(path, tolerance="0"):
            tables.append(chunk.table)
            rejected += len(chunk.rejected)
    return pa.concat_tables(tables), rejected


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    """Two runs with one seed write identical files; another seed does not."""
    runs = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_exports(
            tmp_path / name, stores=3, rows_per_store=1_500, seed=seed, formats="mixed"
        )
        files = sorted((tmp_path / name).rglob("*"))
        runs.append(
            {
                p.relative_to(tmp_path / name): p.read_bytes()
                for p in files
                if p.is_file()
            }
        )
    assert runs[0] == runs[1]
    assert runs[0].keys() == runs[2].keys() and runs[0] != runs[2]


def test_layout_and_formats_follow_the_real_exports(mixed: Path) -> None:
    """Files sit at <day>/store_<NN>_<day>.csv, each in its store's variant."""
    entries = json.loads((mixed / "manifest.json").read_text())["files"]
    assert [e["path"] for e in entries] == [
        f"{day}/store_{store:02d}_{day}.csv"
        for day in ("2012-03-05", "2012-03-06")
        for store in range(1, 7)
    ]
    assert [e["format"] for e in entries[:6]] == list(VARIANTS)
    for entry in entries:
        fmt = detect_format(mixed / entry["path"])
        assert fmt.without_notes() == VARIANTS[entry["format"]][0].without_notes()


def test_reported_totals_match_a_re_read(mixed: Path) -> None:
    """Reading every file back (tolerance 0) gives the manifest totals exactly."""
    table, rejected = read_folder(mixed)
    totals = load_totals(mixed)
    assert rejected == 0
    assert table.num_rows == totals.rows == 12 * 4_000
    assert pc.sum(table["cantidad"]).as_py() == totals.sum_quantity
    assert pc.sum(table["monto_total"]).as_py() == totals.sum_line_total
    assert (
        pc.count_distinct(table["numero_factura"]).as_py() == totals.distinct_invoices
    )

    for entry in json.loads((mixed / "manifest.json").read_text())["files"]:
        rows = sum(c.table.num_rows for c in read_export(mixed / entry["path"]))
        assert rows == entry["rows"]


def test_content_has_the_real_exports_quirks(mixed: Path) -> None:
    """Codes, returns, zero prices, repeats, guests and quoted text all occur."""
    table, _ = read_folder(mixed)
    rows = table.num_rows
    codes = set(table["producto_id"].to_pylist())
    assert sum(bool(re.fullmatch(r"\d{5}[A-Z]?", code)) for code in codes) > 0.95 * len(
        codes
    )
    assert any(re.fullmatch(r"\d{5}[A-Z]", code) for code in codes)
    assert {"POST", "M"} <= codes

    returns = pc.starts_with(table["numero_factura"], "C")
    share = pc.sum(returns.cast(pa.int64())).as_py() / rows
    assert 0.01 < share < 0.04
    assert pc.all(pc.less(table.filter(returns)["cantidad"], 0)).as_py()
    adjustments = table.filter(
        pc.and_(pc.invert(returns), pc.less(table["cantidad"], 0))
    )
    assert adjustments.num_rows and set(adjustments["precio_unitario"].to_pylist()) == {
        Decimal(0)
    }
    assert (
        pc.sum(pc.equal(table["precio_unitario"], Decimal(0)).cast(pa.int64())).as_py()
        > 0
    )

    guests = table["cliente_id"].null_count / rows
    assert 0.25 < guests < 0.45
    assert rows / pc.count_distinct(table["numero_factura"]).as_py() > 5

    texts = table["descripcion"].to_pylist()
    assert any(", " in t for t in texts) and any('"' in t for t in texts)
    assert any(t.endswith(" ") for t in texts) and any("£" in t for t in texts)
    manifest = json.loads((mixed / "manifest.json").read_text())
    assert manifest["overall"]["exact_duplicate_lines"] > 0


def test_quoting_and_variant_bytes(mixed: Path) -> None:
    """Comma text is quoted in comma files; cp1252 files carry 0xF1 for ñ."""
    canonical = (mixed / "2012-03-05" / "store_01_2012-03-05.csv").read_text()
    assert re.search(r',"[^",]*, [^"]*",', canonical)
    spanish_excel = (mixed / "2012-03-05" / "store_06_2012-03-05.csv").read_bytes()
    assert spanish_excel.startswith(b"ubicacion_id;fecha;")
    assert (
        b"\r\n6;05/03/2012;" in spanish_excel
        and "Países".encode("cp1252") in spanish_excel
    )
    bom = (mixed / "2012-03-05" / "store_04_2012-03-05.csv").read_bytes()
    assert bom.startswith(b"\xef\xbb\xbflocation_id,")


def test_sizes_days_and_arguments(tmp_path: Path) -> None:
    """start/ndays choose the days, zero rows gives header-only files, bad input fails."""
    files = generate_exports(
        tmp_path, stores=[2, 16], start=date(2012, 1, 30), ndays=3, rows_per_store=0
    )
    assert [f.name for f in files][:2] == [
        "store_02_2012-01-30.csv",
        "store_16_2012-01-30.csv",
    ]
    assert [f.parent.name for f in files][::2] == [
        "2012-01-30",
        "2012-01-31",
        "2012-02-01",
    ]
    assert all(list(read_export(f)) == [] for f in files)
    assert load_totals(tmp_path).rows == 0
    with pytest.raises(ValueError, match="formats must be"):
        generate_exports(tmp_path, formats="xml")
