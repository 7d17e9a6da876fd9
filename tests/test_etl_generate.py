"""The export generator: deterministic, exact totals, realistic content."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

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
    generate_exports(out, stores=6, days=DAYS, rows_per_store=4_000, formats="mixed")
    return out


def entries(out: Path) -> list[dict[str, Any]]:
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return list(manifest["files"])


def read_folder(out: Path) -> pa.Table:
    """Every file's good rows; line totals must be exact (tolerance 0)."""
    tables = []
    for path in sorted(out.rglob("*.csv")):
        for chunk in read_export(path, tolerance="0"):
            assert chunk.rejected == ()
            tables.append(chunk.table)
    return pa.concat_tables(tables)


def count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    """Two runs with one seed write identical files; another seed does not."""
    runs = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        out = tmp_path / name
        generate_exports(
            out, stores=3, rows_per_store=1_500, seed=seed, formats="mixed"
        )
        files = [path for path in sorted(out.rglob("*")) if path.is_file()]
        runs.append({path.relative_to(out): path.read_bytes() for path in files})
    assert runs[0] == runs[1]
    assert runs[0].keys() == runs[2].keys()
    assert runs[0] != runs[2]


def test_layout_and_formats_follow_the_real_exports(mixed: Path) -> None:
    """Files sit at <day>/store_<NN>_<day>.csv, each in its store's variant."""
    listed = entries(mixed)
    assert [entry["path"] for entry in listed] == [
        f"{day}/store_{store:02d}_{day}.csv"
        for day in ("2012-03-05", "2012-03-06")
        for store in range(1, 7)
    ]
    assert [entry["format"] for entry in listed[:6]] == list(VARIANTS)
    for entry in listed:
        written, _ = VARIANTS[entry["format"]]
        path = mixed / entry["path"]
        if path.read_bytes().isascii():  # reads the same in either encoding
            written = replace(written, encoding="utf-8")
        assert detect_format(path).without_notes() == written.without_notes()


def test_reported_totals_match_a_re_read(mixed: Path) -> None:
    """Reading every file back gives the manifest totals exactly."""
    table = read_folder(mixed)
    totals = load_totals(mixed)
    assert table.num_rows == totals.rows == 12 * 4_000
    assert pc.sum(table["cantidad"]).as_py() == totals.sum_quantity
    assert pc.sum(table["monto_total"]).as_py() == totals.sum_line_total
    invoices = pc.count_distinct(table["numero_factura"]).as_py()
    assert invoices == totals.distinct_invoices

    for entry in entries(mixed):
        path = mixed / entry["path"]
        text = path.read_bytes().decode(detect_format(path).encoding)
        lines = text.splitlines()[1:]
        assert len(lines) == entry["rows"]
        assert len(lines) - len(set(lines)) == entry["exact_duplicate_lines"]


def test_content_has_the_real_exports_quirks(mixed: Path) -> None:
    """Codes, returns, adjustments, zero prices, repeats, guests and odd text."""
    table = read_folder(mixed)
    rows = table.num_rows
    codes = set(table["producto_id"].to_pylist())
    plain = [code for code in codes if re.fullmatch(r"\d{5}[A-Z]?", code)]
    assert len(plain) > 0.95 * len(codes)
    assert any(code[-1].isalpha() for code in plain)
    assert {"POST", "M"} <= codes

    returns = pc.starts_with(table["numero_factura"], "C")
    assert 0.01 < count(returns) / rows < 0.04
    assert pc.all(pc.less(table.filter(returns)["cantidad"], 0)).as_py()
    negative = pc.less(table["cantidad"], 0)
    adjustments = table.filter(pc.and_(pc.invert(returns), negative))
    assert adjustments.num_rows > 0
    assert set(adjustments["precio_unitario"].to_pylist()) == {Decimal(0)}
    assert count(pc.equal(table["precio_unitario"], Decimal(0))) > adjustments.num_rows

    assert 0.25 < table["cliente_id"].null_count / rows < 0.45
    assert rows / pc.count_distinct(table["numero_factura"]).as_py() > 5
    assert sum(entry["exact_duplicate_lines"] for entry in entries(mixed)) > 0

    texts = table["descripcion"].to_pylist()
    assert any(", " in text for text in texts)
    assert any('"' in text for text in texts)
    assert any(text.endswith(" ") for text in texts)
    assert any("£" in text for text in texts)


def test_quoting_and_variant_bytes(mixed: Path) -> None:
    """Comma text is quoted in comma files; variants carry their real bytes."""
    folder = mixed / "2012-03-05"
    canonical = (folder / "store_01_2012-03-05.csv").read_text()
    assert re.search(r',"[^",]*, [^"]*",', canonical)
    assert "\r" not in canonical

    spanish_excel = (folder / "store_06_2012-03-05.csv").read_bytes()
    assert spanish_excel.startswith(b"ubicacion_id;fecha;")
    assert b"\r\n6;05/03/2012;" in spanish_excel
    assert "Países Bajos\r\n".encode("cp1252") in spanish_excel

    bom = (folder / "store_04_2012-03-05.csv").read_bytes()
    assert bom.startswith(b"\xef\xbb\xbflocation_id,")


def test_sizes_days_and_arguments(tmp_path: Path) -> None:
    """start/ndays pick the days, zero rows gives header-only files."""
    files = generate_exports(
        tmp_path, stores=[2, 16], start=date(2012, 1, 30), ndays=3, rows_per_store=0
    )
    names = [f"{path.parent.name}/{path.name}" for path in files]
    assert names[:2] == [
        "2012-01-30/store_02_2012-01-30.csv",
        "2012-01-30/store_16_2012-01-30.csv",
    ]
    assert names[-1] == "2012-02-01/store_16_2012-02-01.csv"
    assert all(list(read_export(path)) == [] for path in files)
    assert load_totals(tmp_path).rows == 0

    with pytest.raises(ValueError, match="formats must be"):
        generate_exports(tmp_path, formats="xml")
    with pytest.raises(ValueError, match="rows_per_store >= 0"):
        generate_exports(tmp_path, rows_per_store=-1)
