"""Reading store exports: real formats, quarantined rows, refused files, chunks."""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl._columns import CANONICAL, ENGLISH, OUTPUT_SCHEMA
from etl.formats import (
    ExportFormat,
    FileRejected,
    ParsedChunk,
    RejectedRow,
    detect_format,
    file_sha256,
    file_store_day,
    read_export,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GROUPS = [
    "exports",
    "variants/cp1252",
    "variants/es_excel",
    "variants/semicolon_decimal_comma",
    "variants/spanish_header",
    "variants/utf8_bom",
]
FIELDS = {
    "location_id": "1",
    "date": "2011-03-01",
    "invoice_number": "545220",
    "product_id": "85123A",
    "quantity": "6",
    "unit_price": "2.55",
    "line_total": "15.30",
    "description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "invoice_time": "08:26",
    "customer_id": "17850",
    "location_name": "United Kingdom",
}

needs_data = pytest.mark.skipif(
    not (DATA / "manifest.json").exists(),
    reason=f"no real sample exports at {DATA} (they live beside the repository)",
)


def line(delimiter: str = ",", **changes: str) -> str:
    """One export line: the good row of FIELDS with some fields changed."""
    values = {**FIELDS, **changes}
    return delimiter.join(values[name] for name in ENGLISH)


HEADER = ",".join(ENGLISH)
GOOD = line()


@dataclass
class Totals:
    rows: int = 0
    quantity: int = 0
    line_total: Decimal = Decimal(0)
    invoices: set[str] = field(default_factory=set)
    rejected: list[RejectedRow] = field(default_factory=list)
    chunks: list[ParsedChunk] = field(default_factory=list)

    def add(self, chunk: ParsedChunk) -> None:
        table = chunk.table
        assert table.schema.equals(OUTPUT_SCHEMA.remove_metadata())
        assert chunk.rows_read == table.num_rows + len(chunk.rejected)
        self.rows += table.num_rows
        self.quantity += pc.sum(table["cantidad"]).as_py() or 0
        self.line_total += pc.sum(table["monto_total"]).as_py() or Decimal(0)
        self.invoices.update(pc.unique(table["numero_factura"]).to_pylist())
        self.rejected += chunk.rejected
        self.chunks.append(chunk)

    def cents(self) -> str:
        cent = Decimal("0.01")
        return str(self.line_total.quantize(cent, rounding=ROUND_HALF_UP))

    def lines_rejected(self) -> list[int]:
        return [row.line for row in self.rejected]

    def table(self) -> pa.Table:
        return pa.concat_tables([chunk.table for chunk in self.chunks])


def read_all(path: Path, **options: Any) -> Totals:
    totals = Totals()
    for chunk in read_export(path, **options):
        totals.add(chunk)
    return totals


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def manifest() -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())
    return facts


def manifest_file(suffix: str) -> dict[str, Any]:
    return next(e for e in manifest()["files"] if e["path"].endswith(suffix))


@needs_data
@pytest.mark.shared_data
@pytest.mark.parametrize("group", GROUPS)
def test_real_folder_matches_manifest_totals(group: str) -> None:
    """Every folder of real exports reads back to the manifest's exact totals."""
    facts = manifest()
    entries = [e for e in facts["files"] if e["path"].startswith(group + "/")]

    totals = Totals()
    for entry in entries:
        before = totals.rows
        for chunk in read_export(DATA / entry["path"]):
            totals.add(chunk)
            keys = chunk.table.group_by(["ubicacion_id", "fecha"]).aggregate([])
            day = date.fromisoformat(entry["date"])
            assert keys.to_pylist() == [
                {"ubicacion_id": entry["location_id"], "fecha": day}
            ]
        assert totals.rows - before == entry["rows"], entry["path"]

    expected = facts["groups"][group]
    assert totals.rejected == []
    assert totals.rows == expected["rows"]
    assert totals.quantity == expected["sum_quantity"]
    assert totals.cents() == expected["sum_line_total"]
    assert len(totals.invoices) == expected["distinct_invoices"]


@needs_data
@pytest.mark.shared_data
@pytest.mark.parametrize("group", GROUPS)
def test_real_folder_format_is_detected(group: str) -> None:
    """Detection reports each folder's declared format.

    An ASCII-only file reads the same in UTF-8 and Windows-1252, so its
    encoding is only checked when it holds other bytes.
    """
    name = "canonical" if group == "exports" else group.removeprefix("variants/")
    declared = manifest()["formats"][name]
    encodings = set()
    for path in sorted((DATA / group).rglob("*.csv")):
        fmt = detect_format(path)
        assert fmt.kind == "csv"
        assert fmt.bom == declared["bom"]
        assert fmt.delimiter == declared["delimiter"]
        assert fmt.decimal == declared["decimal"]
        assert fmt.header == declared["header"]
        assert fmt.date_format == declared["date"]
        assert fmt.newline == declared["newline"]
        if not path.read_bytes().isascii():
            encodings.add(fmt.encoding)
    assert encodings <= {declared["encoding"]}


@needs_data
@pytest.mark.shared_data
def test_ambiguous_day_month_dates_are_settled_as_day_first_and_said() -> None:
    """04/03/2011 could be either: the file is read dd/mm/yyyy and says so."""
    path = next((DATA / "variants/es_excel").rglob("store_01_*.csv"))
    fmt = detect_format(path)
    assert fmt.date_format == "dmy"
    assert any("ambiguous" in note for note in fmt.notes)
    assert "dd/mm/yyyy" in fmt.describe()
    assert file_store_day(path) == (1, date(2011, 3, 4))


@needs_data
@pytest.mark.shared_data
def test_descriptions_and_hash_are_byte_exact() -> None:
    """Quotes, commas and trailing spaces survive; the hash matches the manifest."""
    entry = manifest_file("store_01_2011-02-09.csv")
    path = DATA / entry["path"]
    with path.open(newline="", encoding="utf-8") as handle:
        expected = [row[7] for row in list(csv.reader(handle))[1:]]

    read = read_all(path).table()["descripcion"].to_pylist()
    assert read == expected
    assert any(text.endswith(" ") for text in read)
    assert any('"' in text for text in read)
    assert file_sha256(path) == entry["sha256"]


@needs_data
@pytest.mark.shared_data
def test_real_file_in_chunks_of_seven_keeps_totals() -> None:
    """A real store-day file read 7 rows at a time still matches the manifest."""
    entry = manifest_file("store_01_2010-12-01.csv")
    totals = read_all(DATA / entry["path"], chunk_rows=7)
    assert totals.rows == entry["rows"]
    assert totals.quantity == entry["sum_quantity"]
    assert totals.cents() == entry["sum_line_total"]
    assert len(totals.invoices) == entry["distinct_invoices"]
    assert all(chunk.rows_read == 7 for chunk in totals.chunks[:-1])


def malformed_file(newline: str) -> tuple[str, dict[int, str]]:
    """A file mixing good rows with one broken row of every kind.

    Returns the text and, per broken line number, a part of its reason.
    """
    unclosed = line(description='"BROKEN DESC')
    quoted = line(description='"LETTER ""A"", BLING "', quantity="2")
    quoted = quoted.replace(",2.55,15.30,", ",0.83,1.66,")
    lines = {
        2: (GOOD, None),
        3: (line(quantity="abc"), "quantity 'abc' is not a whole number"),
        4: (line(unit_price="2.5x"), "unit price '2.5x'"),
        5: (line(date="2011-13-45"), "'2011-13-45' is not a valid yyyy-mm-dd"),
        6: (line(date="1999-12-31"), "outside the accepted window"),
        7: (line(location_id="99"), "store 99 is not a known store (1-16)"),
        8: (line(invoice_number=""), "invoice number is missing"),
        9: (line(line_total="15.40"), "within the tolerance of 0.01"),
        10: (GOOD + ",extra", "12 fields where the header has 11"),
        11: (line(invoice_number="C545221", quantity="-6", line_total="-15.30"), None),
        12: (
            line(product_id="M", quantity="1", unit_price="0.00", line_total="0"),
            None,
        ),
        13: (GOOD, None),
        14: (unclosed, "quoted field is not closed"),
        15: ("", "blank line"),
        16: (line(quantity="-5", unit_price="0", line_total="0", customer_id=""), None),
        17: (quoted, None),
    }
    text = newline.join([HEADER, *(text for text, _ in lines.values())]) + newline
    return text, {number: why for number, (_, why) in lines.items() if why}


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("chunk_rows", [3, 1000])
def test_bad_rows_are_quarantined_with_line_raw_text_and_reason(
    tmp_path: Path, newline: str, chunk_rows: int
) -> None:
    """Each broken row is set aside with its reason; good rows of the file load."""
    text, broken = malformed_file(newline)
    path = write(tmp_path, "store_01_2011-03-01.csv", text)
    totals = read_all(path, chunk_rows=chunk_rows)

    raw_lines = text.split(newline)
    assert totals.lines_rejected() == sorted(broken)
    for row in totals.rejected:
        assert row.raw == raw_lines[row.line - 1]
        assert broken[row.line] in row.reason, row

    good = totals.table()
    assert good["linea"].to_pylist() == [2, 11, 12, 13, 16, 17]
    assert good["cantidad"].to_pylist() == [6, -6, 1, 6, -5, 2]
    assert good["cliente_id"].to_pylist() == [17850] * 4 + [None, 17850]
    assert good["descripcion"][5].as_py() == 'LETTER "A", BLING '
    assert totals.line_total == Decimal("16.96")
    assert sum(chunk.rows_read for chunk in totals.chunks) == 16


def test_tolerance_window_and_stores_are_options(tmp_path: Path) -> None:
    """The rules' limits are stated defaults that a caller can change."""
    tomorrow = date.today() + timedelta(days=1)
    rows = [
        line(line_total="15.31"),
        line(line_total="15.32"),
        line(date=tomorrow.isoformat()),
        line(date=(tomorrow + timedelta(days=1)).isoformat()),
        line(location_id="17"),
    ]
    path = write(tmp_path, "rules.csv", "\n".join([HEADER, *rows]) + "\n")
    assert read_all(path).lines_rejected() == [3, 5, 6]

    narrow = read_all(
        path,
        tolerance="0",
        window=(date(2011, 3, 1), date(2011, 3, 1)),
        stores=range(1, 18),
    )
    assert narrow.lines_rejected() == [2, 3, 4, 5]
    assert "within the tolerance of 0" in narrow.rejected[0].reason


def test_a_value_is_judged_the_same_whatever_its_neighbours(tmp_path: Path) -> None:
    """Odd but valid values pass in a clean chunk and beside a broken row alike."""
    odd = line(quantity=" 6 ", unit_price="+2.55", line_total=" 15.3")
    odd = odd.replace(",17850,", ", 17850 ,")
    hexadecimal = line(quantity="0x6")
    text = "\n".join([HEADER, odd, odd, line(location_id="x1"), odd, hexadecimal])
    path = write(tmp_path, "odd.csv", text + "\n")
    for chunk_rows in (1, 2, 10):
        totals = read_all(path, chunk_rows=chunk_rows)
        assert totals.lines_rejected() == [4, 6]
        assert totals.rows == 3
        assert totals.quantity == 18
        assert totals.line_total == Decimal("45.90")
        assert totals.table()["cliente_id"].to_pylist() == [17850] * 3


def test_decimal_comma_refuses_a_thousands_point(tmp_path: Path) -> None:
    """In a decimal-comma file 1.234,50 is refused, never read as 1.2345."""
    good = line(";", unit_price="2,55", line_total="15,30", description="HEART, RED")
    bad = good.replace(";15,30;", ";1.234,50;")
    path = write(tmp_path, "comma.csv", f"{';'.join(ENGLISH)}\n{good}\n{bad}\n")
    fmt = detect_format(path)
    assert (fmt.delimiter, fmt.decimal) == (";", ",")

    totals = read_all(path, fmt=fmt)
    assert totals.line_total == Decimal("15.30")
    assert totals.table()["descripcion"].to_pylist() == ["HEART, RED"]
    assert totals.lines_rejected() == [3]
    assert "line total '1.234,50'" in totals.rejected[0].reason


def test_chunks_cover_the_file_in_contiguous_runs(tmp_path: Path) -> None:
    """chunk_rows=7 gives the same rows as one chunk, in runs of exactly 7 lines."""
    rows = [line(invoice_number=f"5452{n:02d}") for n in range(50)]
    path = write(tmp_path, "runs.csv", "\r\n".join([HEADER, *rows]))
    whole, runs = read_all(path), read_all(path, chunk_rows=7)

    assert [chunk.rows_read for chunk in runs.chunks] == [7] * 7 + [1]
    assert runs.chunks[0].first_line == 2
    assert runs.chunks[-1].last_line == 51
    for before, after in zip(runs.chunks, runs.chunks[1:], strict=False):
        assert after.first_line == before.last_line + 1
        assert after.index == before.index + 1
    assert runs.table().equals(whole.table())
    assert runs.invoices == whole.invoices


REFUSALS = {
    "empty": (b"", "is empty", None),
    "blank": (b"\n \n\n", "only blank lines", None),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL bytes", 3),
    "utf16": ((HEADER + "\n").encode("utf-16"), "UTF-16", 1),
    "missing column": (
        HEADER.replace(",customer_id", "").encode() + b"\n",
        "lacks required columns customer_id",
        1,
    ),
    "not a header": (f"{GOOD}\n{GOOD}\n".encode(), "not a recognised header", 1),
    "no separator": (b"hello world\n", "no ',' or ';' separator", 1),
    "truncated quote": (
        f'{HEADER}\n{GOOD}\n{GOOD.split("WHITE")[0]}"WHITE HEA'.encode(),
        "cut short",
        3,
    ),
    "bad encoding": (
        f"{HEADER}\n{GOOD}\n".encode() + b"1,\x81\x8d\n",
        "neither UTF-8 nor Windows-1252",
        3,
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_unreadable_files_are_refused_whole_with_a_clear_message(
    tmp_path: Path, case: str
) -> None:
    """A file that cannot be read raises FileRejected naming file, line and fix."""
    content, words, line_number = REFUSALS[case]
    path = tmp_path / "store_01_2011-03-01.csv"
    path.write_bytes(content)

    with pytest.raises(FileRejected) as caught:
        read_export(path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)
    assert caught.value.line == line_number
    with pytest.raises(FileRejected):
        detect_format(path)


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    """A header with no data is a valid, empty export."""
    for text in (HEADER, HEADER + "\r\n", HEADER + "\n\n \n"):
        path = write(tmp_path, "empty_day.csv", text)
        assert list(read_export(path)) == []
        assert file_store_day(path) is None


def test_stray_non_utf8_bytes_quarantine_only_their_lines(tmp_path: Path) -> None:
    """UTF-8 text with one Windows-1252 byte stays UTF-8 and sets that line aside."""
    good = line(description="VOUCHER £5").encode()
    stray = line(description="VOUCHER £5").encode("cp1252")
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"\n".join([HEADER.encode(), good, stray]) + b"\n")

    fmt = detect_format(path)
    assert fmt.encoding == "utf-8"
    assert "line 3" in fmt.notes[0]
    totals = read_all(path, fmt=fmt)
    assert totals.table()["descripcion"].to_pylist() == ["VOUCHER £5"]
    assert totals.lines_rejected() == [3]
    assert "not valid utf-8" in totals.rejected[0].reason


def test_cp1252_spanish_excel_layout_is_read(tmp_path: Path) -> None:
    """cp1252, CRLF, ';', decimal comma, Spanish header and day-first dates."""
    row = line(
        ";",
        location_id="5",
        date="13/03/2011",
        unit_price="2,55",
        line_total="15,30",
        customer_id="",
        location_name="España",
    )
    voucher = row.replace(";WHITE HANGING HEART T-LIGHT HOLDER;", ";Voucher £20;")
    text = "\r\n".join([";".join(CANONICAL), *[row] * 11, voucher]) + "\r\n"
    path = write(tmp_path, "es.csv", text, "cp1252")

    fmt = detect_format(path)
    assert fmt.without_notes() == ExportFormat(
        encoding="cp1252",
        delimiter=";",
        decimal=",",
        header="es",
        date_format="dmy",
        newline="\r\n",
    )
    table = read_all(path, fmt=fmt).table()
    assert set(table["fecha"].to_pylist()) == {date(2011, 3, 13)}
    assert pc.sum(table["monto_total"]).as_py() == Decimal("183.60")
    assert set(table["nombre_ubicacion"].to_pylist()) == {"España"}
    assert table["descripcion"].to_pylist()[-2:] == [
        FIELDS["description"],
        "Voucher £20",
    ]


def test_forced_fields_override_detection(tmp_path: Path) -> None:
    """A caller can force the date format; unknown keys are refused."""
    path = write(tmp_path, "us.csv", f"{HEADER}\n{line(date='03/01/2011')}\n")
    assert read_all(path).table()["fecha"].to_pylist() == [date(2011, 1, 3)]

    fmt = detect_format(path, force={"date_format": "mdy"})
    assert "date_format forced to 'mdy'" in fmt.describe()
    assert read_all(path, fmt=fmt).table()["fecha"].to_pylist() == [date(2011, 3, 1)]
    with pytest.raises(ValueError, match="cannot force 'header'"):
        detect_format(path, force={"header": "es"})


def test_parquet_exports_in_either_language(tmp_path: Path) -> None:
    """Typed Spanish Parquet and all-text English Parquet both read exactly."""
    money = pa.decimal128(10, 2)
    typed = pa.table(
        {
            "ubicacion_id": pa.array([3, 3], pa.int32()),
            "fecha": pa.array([date(2011, 3, 1)] * 2, pa.date32()),
            "numero_factura": ["545220", "C545221"],
            "producto_id": ["85123A", "POST"],
            "cantidad": pa.array([6, -1], pa.int64()),
            "precio_unitario": pa.array([Decimal("2.55"), Decimal(18)], money),
            "monto_total": pa.array([Decimal("15.30"), Decimal(-18)], money),
            "descripcion": ["HEART", "POSTAGE"],
            "hora_factura": ["08:26", "08:30"],
            "cliente_id": pa.array([12345, None], pa.int64()),
            "nombre_ubicacion": ["France", "Francia"],
        }
    )
    pairs = zip(ENGLISH, CANONICAL, strict=True)
    text = pa.table({en: typed[es].cast(pa.string()) for en, es in pairs})
    text = text.set_column(1, "date", pa.array(["2011-03-01", "2011-13-01"]))
    pq.write_table(typed, tmp_path / "es.parquet")
    pq.write_table(text, tmp_path / "en.parquet")

    spanish = read_all(tmp_path / "es.parquet", chunk_rows=1)
    assert detect_format(tmp_path / "es.parquet").describe().startswith("parquet")
    assert spanish.rows == 2
    assert spanish.line_total == Decimal("-2.70")
    assert [chunk.first_line for chunk in spanish.chunks] == [2, 3]

    english = read_all(tmp_path / "en.parquet")
    assert english.rows == 1
    assert english.lines_rejected() == [3]
    assert english.rejected[0].raw.split(",")[1] == "2011-13-01"

    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(FileRejected, match="not a readable Parquet file"):
        read_export(tmp_path / "fake.parquet")


def test_store_day_of_a_file(tmp_path: Path) -> None:
    """One store and one day give the pair; two days give None."""
    one = write(tmp_path, "one.csv", f"{HEADER}\n{GOOD}\n{GOOD}\n")
    two = write(tmp_path, "two.csv", f"{HEADER}\n{GOOD}\n{line(date='2011-03-02')}\n")
    assert file_store_day(one) == (1, date(2011, 3, 1))
    assert file_store_day(two) is None


PIECES = [
    b",",
    b";",
    b'"',
    b"\n",
    b"\r",
    b" ",
    b"\xa3",
    b"\xc2\xa3",
    b"\x81",
    b"x",
    b"-",
]


@settings(max_examples=120, deadline=None, database=None)
@given(
    rows=st.integers(0, 6),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(PIECES), st.booleans()),
        max_size=6,
    ),
    chunk_rows=st.sampled_from([1, 2, 1000]),
)
def test_damaged_files_are_refused_or_fully_accounted_for(
    rows: int, edits: list[tuple[float, bytes, bool]], chunk_rows: int
) -> None:
    """Whatever the damage: FileRejected, or every line read lands somewhere."""
    data = bytearray("\n".join([HEADER, *[GOOD] * rows]).encode())
    for where, piece, insert in edits:
        at = int(where * len(data))
        data[at : at + (0 if insert else len(piece))] = piece

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.csv"
        path.write_bytes(bytes(data))
        try:
            chunks = list(read_export(path, chunk_rows=chunk_rows))
        except FileRejected:
            return

    next_line = 2
    for chunk in chunks:
        assert chunk.first_line == next_line
        assert chunk.rows_read == chunk.table.num_rows + len(chunk.rejected)
        lines = [row.line for row in chunk.rejected]
        lines += chunk.table["linea"].to_pylist()
        assert sorted(lines) == list(range(chunk.first_line, chunk.last_line + 1))
        next_line = chunk.last_line + 1


@pytest.mark.parametrize(
    "dates",
    [
        ["2011-02-30", "2011-02-29", "2011-04-31"],
        ["30/02/2011", "29/02/2011", "31/04/2011"],
    ],
)
def test_impossible_dates_are_quarantined_not_rolled_over(
    tmp_path: Path, dates: list[str]
) -> None:
    """30 February is a bad row, never quietly 2 March (regression)."""
    cols = (
        "location_id,date,invoice_number,product_id,quantity,unit_price,"
        "line_total,description,invoice_time,customer_id,location_name\n"
    )
    good = "2011-02-28" if "-" in dates[0] else "28/02/2011"
    body = "".join(
        f"2,{d},536001,85123A,1,2.55,2.55,HEART,09:01,,Germany\n"
        for d in [good, *dates]
    )
    totals = read_all(write(tmp_path, "days.csv", cols + body))

    assert totals.rows == 1
    assert len(totals.rejected) == 3


def test_a_stray_latin1_byte_before_utf8_text_keeps_the_file_utf8(
    tmp_path: Path,
) -> None:
    """One bad byte first must not turn every "España" into "EspaÃ±a"."""
    header = (
        "location_id,date,invoice_number,product_id,quantity,unit_price,"
        "line_total,description,invoice_time,customer_id,location_name\n"
    )
    stray = "5,2011-01-04,536001,85123A,1,2.55,2.55,CAF\xe9,09:01,,Spain\n"
    good = "".join(
        f"5,2011-01-04,53600{i},85123A,1,2.55,2.55,HEART,09:01,,España\n"
        for i in range(2, 6)
    )
    path = tmp_path / "stray.csv"
    path.write_bytes(header.encode() + stray.encode("latin-1") + good.encode())

    totals = read_all(path)

    assert detect_format(path).encoding == "utf-8"
    assert totals.rows == 4 and totals.lines_rejected() == [2]
    assert set(totals.table()["nombre_ubicacion"].to_pylist()) == {"España"}
