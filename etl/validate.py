"""Row rules for store exports, applied to whole columns at once.

`check_rows` takes the string columns of one chunk and returns the rows that
pass every rule, typed as `ventas_raw` expects, plus a reason for each row
that fails. The rules:

- the store (`ubicacion_id`) is a whole number and one of the known stores;
- the date parses in the file's date format and lies inside the window
  (default 2000-01-01 to tomorrow, taken when the rules are built);
- the invoice number is present;
- the quantity is a whole number (negative is fine: returns and stock
  adjustments);
- the unit price and the line total are numbers that fit DECIMAL(18,6)
  (zero and negative prices are fine);
- the line total equals quantity x unit price within the tolerance, 0.01 by
  default, compared exactly in decimal, never through floats;
- the customer id is empty or a whole number.

The store name, product code, description and time are informative and never
rejected. A value is read the same whatever else is in its chunk: every
column is first cast whole, and only a column whose cast fails is examined
value by value (surrounding spaces are then forgiven).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl._columns import MONEY, OUTPUT_SCHEMA

__all__ = [
    "DEFAULT_STORES",
    "DEFAULT_TOLERANCE",
    "CheckedRows",
    "RowRules",
    "check_rows",
    "default_window",
    "guess_date_format",
    "guess_decimal",
]

DEFAULT_STORES = range(1, 17)
DEFAULT_TOLERANCE = Decimal("0.01")
EARLIEST_DAY = date(2000, 1, 1)
DATE_FORMATS = {"iso": "%Y-%m-%d", "dmy": "%d/%m/%Y", "mdy": "%m/%d/%Y"}
DATE_WORDS = {"iso": "yyyy-mm-dd", "dmy": "dd/mm/yyyy", "mdy": "mm/dd/yyyy"}
MICROS = 1_000_000
# Values a strict pattern accepts always cast; others are tried one by one.
_SURE = {
    "int32": r"^-?\d{1,9}$",
    "int64": r"^-?\d{1,18}$",
    "money": r"^[+-]?(\d{1,12}(\.\d{0,6})?|\.\d{1,6})$",
}


_ISO_DAY = re.compile(r"\s*\d{4}-\d{1,2}-\d{1,2}\s*")
_SLASH_DAY = re.compile(r"\s*(\d{1,2})/(\d{1,2})/\d{4}\s*")
_COMMA_NUMBER = re.compile(r"\s*[+-]?\d*,\d+\s*")
_POINT_NUMBER = re.compile(r"\s*[+-]?\d*\.\d+\s*")


def guess_date_format(samples: list[str]) -> tuple[str, str | None]:
    """Settle a file's date format from sample values, with a note if guessed.

    yyyy-mm-dd wins when most samples use it. Slashed dates are dd/mm/yyyy
    (the Spanish convention) unless a month field above 12 proves
    mm/dd/yyyy; when every sample is ambiguous (day and month <= 12) the
    file is settled as dd/mm/yyyy and the note says so.
    """
    iso = sum(1 for value in samples if _ISO_DAY.fullmatch(value))
    slashed = [m for value in samples if (m := _SLASH_DAY.fullmatch(value))]
    if not iso and not slashed:
        return "iso", "no recognisable dates in the sample: assumed yyyy-mm-dd"
    if iso >= len(slashed):
        return "iso", None

    first_big = any(int(m.group(1)) > 12 for m in slashed)
    second_big = any(int(m.group(2)) > 12 for m in slashed)
    if second_big and not first_big:
        return "mdy", None
    if first_big:
        return "dmy", None
    note = "every sampled date is ambiguous (day and month <= 12): read as dd/mm/yyyy"
    return "dmy", note


def guess_decimal(samples: list[str], delimiter: str) -> tuple[str, str | None]:
    """Settle a file's decimal mark from sample money values.

    With no decimals in the sample the mark follows the delimiter (a `;`
    file is taken to use the decimal comma, as Spanish spreadsheets do).
    """
    commas = sum(1 for value in samples if _COMMA_NUMBER.fullmatch(value))
    points = sum(1 for value in samples if _POINT_NUMBER.fullmatch(value))
    if commas > points:
        return ",", None
    if points:
        return ".", None
    mark = "," if delimiter == ";" else "."
    return mark, f"no decimals in the sample: assumed decimal mark {mark!r}"


def default_window(today: date | None = None) -> tuple[date, date]:
    """The default accepted date range: 2000-01-01 to tomorrow, inclusive."""
    today = date.today() if today is None else today
    return EARLIEST_DAY, today + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RowRules:
    """What a valid row looks like; build it with `RowRules.build`."""

    stores: frozenset[int]
    window: tuple[date, date]
    tolerance: Decimal

    @classmethod
    def build(
        cls,
        *,
        stores: Iterable[int] = DEFAULT_STORES,
        window: tuple[date, date] | None = None,
        tolerance: Decimal | str = DEFAULT_TOLERANCE,
    ) -> RowRules:
        """Check and freeze the rules.

        Raises:
            ValueError: no stores, a window that ends before it starts, or a
                tolerance that is negative or finer than a millionth.
        """
        known = frozenset(int(store) for store in stores)
        if not known:
            raise ValueError("stores is empty: give the store ids to accept")
        span = default_window() if window is None else window
        if span[1] < span[0]:
            raise ValueError(f"window {span[0]} to {span[1]} ends before it starts")
        tol = Decimal(str(tolerance))
        if tol < 0 or tol != tol.quantize(Decimal("0.000001")):
            raise ValueError(f"tolerance {tol} must be >= 0 with at most 6 decimals")
        return cls(known, (span[0], span[1]), tol)

    def describe_stores(self) -> str:
        low, high = min(self.stores), max(self.stores)
        if len(self.stores) == high - low + 1:
            return f"{low}-{high}"
        return ", ".join(str(store) for store in sorted(self.stores))


@dataclass(frozen=True, slots=True)
class CheckedRows:
    """Outcome of `check_rows`: typed good rows and (row, reason) pairs."""

    table: pa.Table
    rejects: list[tuple[int, str]]


def check_rows(
    raw: pa.Table,
    lines: np.ndarray,
    *,
    date_format: str,
    decimal: str,
    rules: RowRules,
) -> CheckedRows:
    """Apply the row rules to the string columns of one chunk.

    Args:
        raw: one string column per canonical name (`etl._columns.CANONICAL`).
        lines: physical line number of each row, stored as `linea`.
        date_format: "iso", "dmy" or "mdy", settled for the whole file.
        decimal: the file's decimal mark, "." or ",".
        rules: stores, date window and line-total tolerance.

    Returns:
        The rows that pass, in `OUTPUT_SCHEMA`, and for each other row its
        position in `raw` with every rule it breaks, joined by "; ".
    """
    bad: dict[str, np.ndarray] = {}

    store, bad["store"] = _cast(raw["ubicacion_id"], pa.int32(), "int32")
    known = pa.array(sorted(rules.stores), pa.int32())
    bad["store_unknown"] = ~bad["store"] & ~_np(pc.is_in(store, known))

    day, bad["date"] = _dates(raw["fecha"], date_format)
    start, end = (pa.scalar(edge, pa.date32()) for edge in rules.window)
    inside = pc.and_(pc.greater_equal(day, start), pc.less_equal(day, end))
    bad["window"] = ~bad["date"] & ~_np(inside)

    invoice = raw["numero_factura"]
    blank = pc.or_(pc.equal(invoice, ""), pc.utf8_is_space(invoice))
    bad["invoice"] = _np(blank)

    quantity, bad["quantity"] = _cast(raw["cantidad"], pa.int64(), "int64")
    price, bad["price"] = _money(raw["precio_unitario"], decimal)
    total, bad["total"] = _money(raw["monto_total"], decimal)
    comparable = ~(bad["quantity"] | bad["price"] | bad["total"])
    bad["mismatch"] = comparable & ~_totals_agree(
        quantity, price, total, rules.tolerance
    )
    customer, bad["customer"] = _customers(raw["cliente_id"])

    rejected = np.logical_or.reduce(list(bad.values()))
    columns = {
        "ubicacion_id": store,
        "fecha": day,
        "numero_factura": invoice,
        "producto_id": raw["producto_id"],
        "cantidad": quantity,
        "precio_unitario": price,
        "monto_total": total,
        "descripcion": raw["descripcion"],
        "hora_factura": raw["hora_factura"],
        "cliente_id": customer,
        "nombre_ubicacion": raw["nombre_ubicacion"],
        "linea": pa.array(lines, pa.int64()),
    }
    table = pa.Table.from_pydict(columns, schema=OUTPUT_SCHEMA.remove_metadata())
    if not rejected.any():
        return CheckedRows(table, [])

    table = table.filter(pa.array(~rejected))
    positions = np.flatnonzero(rejected)
    return CheckedRows(table, _reasons(raw, positions, bad, date_format, rules))


def _np(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(values, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _cast(
    column: pa.ChunkedArray, to: pa.DataType, kind: str
) -> tuple[pa.ChunkedArray, np.ndarray]:
    # Arrow reads "0x1F" as a whole number; a store export never means hex.
    hexadecimal = kind != "money" and pc.any(_hex(column)).as_py()
    if not hexadecimal:
        try:
            return pc.cast(column, to), np.zeros(len(column), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    values = pc.utf8_trim_whitespace(column).combine_chunks()
    usable = _castable(values, to, kind)
    kept = pc.if_else(pa.array(usable), values, pa.scalar(None, pa.string()))
    return pa.chunked_array([pc.cast(kept, to)]), ~usable


def _hex(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.match_substring(values, "x", ignore_case=True)


def _castable(values: pa.Array, to: pa.DataType, kind: str) -> np.ndarray:
    """Which values cast to `to`, found without casting each one alone."""
    sure = _np(pc.match_substring_regex(values, _SURE[kind]))
    hopeless = ~_np(pc.match_substring_regex(values, r"\d"))
    if kind != "money":
        hopeless |= _np(_hex(values))
    usable = sure.copy()
    doubtful = np.flatnonzero(~sure & ~hopeless)

    # Bisect the doubtful values: a slice that casts is settled in one call.
    pending = [(0, len(doubtful))]
    while pending:
        low, high = pending.pop()
        picked = values.take(pa.array(doubtful[low:high]))
        try:
            pc.cast(picked, to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if high - low > 1:
                middle = (low + high) // 2
                pending += [(low, middle), (middle, high)]
            continue
        usable[doubtful[low:high]] = True
    return usable


def _dates(
    column: pa.ChunkedArray, date_format: str
) -> tuple[pa.ChunkedArray, np.ndarray]:
    if date_format == "iso":
        try:
            return pc.cast(column, pa.date32()), np.zeros(len(column), dtype=bool)
        except pa.ArrowInvalid:
            pass
    pattern = DATE_FORMATS[date_format]
    trimmed = pc.utf8_trim_whitespace(column)
    parsed = pc.strptime(trimmed, format=pattern, unit="s", error_is_null=True)
    valid = pc.and_kleene(pc.is_valid(parsed), _same_day(trimmed, parsed, date_format))
    return pc.cast(parsed, pa.date32()), ~_np(pc.fill_null(valid, False))


# Where day and month sit in each format's text, split on its separator.
_PARTS = {"iso": ("-", 2, 1), "dmy": ("/", 0, 1), "mdy": ("/", 1, 0)}


def _same_day(
    text: pa.ChunkedArray, parsed: pa.ChunkedArray, date_format: str
) -> pa.ChunkedArray:
    """False where strptime rolled an impossible date over (30/02 -> 02/03).

    pyarrow's strptime accepts a day past the month's end and carries it
    into the next month; a date is valid only if it reads back the same.
    """
    sep, day_at, month_at = _PARTS[date_format]
    parsed_text = pc.if_else(pc.is_valid(parsed), text, pa.scalar(None, pa.string()))
    parts = pc.split_pattern(parsed_text, sep)
    day, month = (
        pc.cast(pc.utf8_trim_whitespace(pc.list_element(parts, at)), pa.int64())
        for at in (day_at, month_at)
    )
    return pc.and_kleene(
        pc.equal(pc.day(parsed), day), pc.equal(pc.month(parsed), month)
    )


def _money(column: pa.ChunkedArray, decimal: str) -> tuple[pa.ChunkedArray, np.ndarray]:
    if decimal == ".":
        return _cast(column, MONEY, "money")

    # A point in a decimal-comma file could be a thousands separator: refuse it
    # rather than read 1.234 as one point two three four.
    dotted = _np(pc.match_substring(column, "."))
    if dotted.any():
        column = pc.if_else(pa.array(~dotted), column, pa.scalar(None, pa.string()))
    values, bad = _cast(_comma_to_point(column), MONEY, "money")
    return values, bad | dotted


def _comma_to_point(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Swap every ',' for '.', byte for byte (both are ASCII in UTF-8)."""
    swap = bytes.maketrans(b",", b".")
    parts = []
    for chunk in column.chunks:
        validity, offsets, data = chunk.buffers()
        text = pa.py_buffer(data.to_pybytes().translate(swap)) if data else data
        parts.append(
            pa.StringArray.from_buffers(
                len(chunk), offsets, text, validity, chunk.null_count, chunk.offset
            )
        )
    return pa.chunked_array(parts, pa.string())


def _customers(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    empty = pc.equal(column, "")
    if pc.any(empty).as_py():
        column = pc.if_else(empty, pa.scalar(None, pa.string()), column)
    try:
        return pc.cast(column, pa.int64()), np.zeros(len(column), dtype=bool)
    except pa.ArrowInvalid:
        pass
    trimmed = pc.utf8_trim_whitespace(column)
    blank = pc.equal(trimmed, "")
    trimmed = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    values, bad = _cast(trimmed, pa.int64(), "int64")
    return values, bad & _np(pc.is_valid(trimmed))


def _micros(values: pa.ChunkedArray) -> np.ndarray:
    """DECIMAL(18,6) values as int64 millionths, read from the Arrow buffers."""
    parts = []
    for chunk in values.chunks:
        words = np.frombuffer(chunk.buffers()[1], dtype="<i8")
        begin = 2 * chunk.offset
        parts.append(words[begin : begin + 2 * len(chunk) : 2])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _totals_agree(
    quantity: pa.ChunkedArray,
    price: pa.ChunkedArray,
    total: pa.ChunkedArray,
    tolerance: Decimal,
) -> np.ndarray:
    counts = np.asarray(pc.fill_null(quantity, 0).to_numpy(), dtype=np.int64)
    prices, totals = _micros(price), _micros(total)
    limit = int(tolerance * MICROS)

    # Exact in int64 unless the product could overflow; those few rows are
    # settled with Python integers.
    risky = np.abs(counts.astype(np.float64) * prices) > 4e18
    product = np.where(risky, 0, counts) * prices
    agree = np.asarray(np.abs(product - totals) <= limit, dtype=bool)
    for row in np.flatnonzero(risky):
        exact = int(counts[row]) * int(prices[row]) - int(totals[row])
        agree[row] = abs(exact) <= limit
    return agree


def _reasons(
    raw: pa.Table,
    positions: np.ndarray,
    bad: dict[str, np.ndarray],
    date_format: str,
    rules: RowRules,
) -> list[tuple[int, str]]:
    rows = raw.take(pa.array(positions)).to_pylist()
    start, end = rules.window
    messages: dict[str, Callable[[dict[str, str]], str]] = {
        "store": lambda r: f"store id {r['ubicacion_id']!r} is not a whole number",
        "store_unknown": lambda r: (
            f"store {r['ubicacion_id'].strip()} is not a known store "
            f"({rules.describe_stores()})"
        ),
        "date": lambda r: (
            f"date {r['fecha']!r} is not a valid {DATE_WORDS[date_format]} date"
        ),
        "window": lambda r: (
            f"date {r['fecha'].strip()} is outside the accepted window {start} to {end}"
        ),
        "invoice": lambda r: "invoice number is missing",
        "quantity": lambda r: f"quantity {r['cantidad']!r} is not a whole number",
        "price": lambda r: (
            f"unit price {r['precio_unitario']!r} is not a number that fits "
            "DECIMAL(18,6)"
        ),
        "total": lambda r: (
            f"line total {r['monto_total']!r} is not a number that fits DECIMAL(18,6)"
        ),
        "mismatch": lambda r: (
            f"line total {r['monto_total'].strip()} is not quantity x unit price "
            f"({r['cantidad'].strip()} x {r['precio_unitario'].strip()}) within "
            f"the tolerance of {rules.tolerance}"
        ),
        "customer": lambda r: f"customer id {r['cliente_id']!r} is not a whole number",
    }
    found = []
    for row, position in zip(rows, positions, strict=True):
        broken = [messages[rule](row) for rule, mask in bad.items() if mask[position]]
        found.append((int(position), "; ".join(broken)))
    return found
