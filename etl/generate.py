"""Deterministic, realistic store exports for demos, tests and benchmarks.

`generate_exports` writes one CSV per store and day in the layout of the real
sample data (`<out>/<YYYY-MM-DD>/store_<NN>_<YYYY-MM-DD>.csv`) and a
`manifest.json` with exact totals, so a load can be checked to the cent.

The content imitates the real exports: product codes such as `85123A`, a few
service codes (`POST`, `DOT`, `M`, `C2`, gift vouchers with `£`),
descriptions with commas, doubled quotes and trailing spaces, invoices of
several lines, about 2% of lines on `C` return invoices with negative
quantities, some zero prices, stock adjustments (negative quantity, zero
price, no customer), repeated identical lines, about a third of lines without
a customer, and line totals that are exactly quantity x unit price.

Everything is drawn with numpy and assembled with Arrow string kernels, so
writing millions of rows takes seconds; the same arguments always give the
same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl._columns import CANONICAL, ENGLISH, STORE_NAMES
from etl.formats import ExportFormat

__all__ = [
    "DEFAULT_START",
    "MANIFEST_NAME",
    "VARIANTS",
    "ExportTotals",
    "generate_exports",
    "load_totals",
]

DEFAULT_START = date(2012, 1, 2)
MANIFEST_NAME = "manifest.json"
FIRST_INVOICE = 600_000
_SLICE_ROWS = 1 << 20

# Variant name -> (format written, whether store names are in Spanish).
VARIANTS: dict[str, tuple[ExportFormat, bool]] = {
    "canonical": (ExportFormat(), False),
    "cp1252": (ExportFormat(encoding="cp1252", newline="\r\n"), True),
    "semicolon_decimal_comma": (ExportFormat(delimiter=";", decimal=","), False),
    "utf8_bom": (ExportFormat(bom=True), False),
    "spanish_header": (ExportFormat(header="es"), False),
    "es_excel": (
        ExportFormat(
            encoding="cp1252",
            delimiter=";",
            decimal=",",
            header="es",
            date_format="dmy",
            newline="\r\n",
        ),
        True,
    ),
}
_MIXED_ORDER = tuple(VARIANTS)

# Catalogue prices in pence, quantity menu with weights, and the words that
# product descriptions are made of (upper case, like the real ones).
_PRICES = np.concatenate(
    [
        [29, 39, 42, 55, 65, 72, 85, 125, 145, 165, 195, 210, 250, 255],
        [295, 375, 425, 495, 595, 650, 795, 850, 995, 1275, 1495, 1800, 2495, 3995],
    ]
)
_QUANTITIES = np.array([1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 25, 36, 48, 72, 96, 144])
_QUANTITY_ODDS = np.array([14, 12, 5, 8, 12, 5, 6, 16, 3, 7, 2, 2, 3, 1, 1, 1]) / 98
_ADJUSTMENTS = ["?", "damaged", "check", "wet damaged", "missing", "sold as set"]
_SERVICES = [
    ("POST", "POSTAGE", 1800, 0.004),
    ("DOT", "DOTCOM POSTAGE", 1195, 0.001),
    ("M", "Manual", 0, 0.001),
    ("C2", "CARRIAGE", 5000, 0.0005),
    ("gift_0001_20", "Dotcomgiftshop Gift Voucher £20.00", 1667, 0.0003),
]
_WORDS = {
    "adjective": "VINTAGE/RETRO/REGENCY/HANGING/JUMBO/SMALL/LARGE/MINI/PAPER/WOODEN/"
    "GLASS/ENAMEL/KNITTED/FELT/HEART/STAR/FLORAL/SPOTTY",
    "colour": "WHITE/RED/PINK/BLUE/GREEN/IVORY/CREAM/BLACK/SILVER/GOLD/PURPLE/ANTIQUE",
    "thing": "T-LIGHT HOLDER/LANTERN/COAT HANGER/HOT WATER BOTTLE/CAKE TIN/LUNCH BOX/"
    "BUNTING/DOORMAT/PHOTO FRAME/TEA CUP/CANDLE/JAM JAR/SHOPPING BAG/NAPKINS/"
    "BIRTHDAY CARD/MUG/CLOCK/KEY RING",
    "design": "PANTRY/WOODLAND/SPACEBOY/DOLLY GIRL/RETROSPOT/PAISLEY/UNION JACK/SKULLS",
}


@dataclass(frozen=True, slots=True)
class ExportTotals:
    """Exact totals of a set of export rows, as in `manifest.json`."""

    rows: int
    sum_quantity: int
    sum_line_total: Decimal
    distinct_invoices: int


def load_totals(out_dir: Path | str) -> ExportTotals:
    """The overall totals a `generate_exports` run wrote to its manifest."""
    overall = json.loads((Path(out_dir) / MANIFEST_NAME).read_text())["overall"]
    return ExportTotals(
        rows=overall["rows"],
        sum_quantity=overall["sum_quantity"],
        sum_line_total=Decimal(overall["sum_line_total"]),
        distinct_invoices=overall["distinct_invoices"],
    )


def generate_exports(
    out_dir: Path | str,
    *,
    stores: int | Iterable[int] = 16,
    days: Sequence[date] | None = None,
    start: date = DEFAULT_START,
    ndays: int = 1,
    rows_per_store: int = 2_000,
    seed: int = 0,
    formats: str = "canonical",
) -> list[Path]:
    """Write realistic store exports and their `manifest.json`.

    Args:
        out_dir: folder to write into (created if missing).
        stores: how many stores (ids 1..n), or the store ids themselves.
        days: the days to write; if None, `ndays` consecutive days from
            `start`.
        rows_per_store: data rows in every file.
        seed: the same seed and arguments give byte-identical files.
        formats: "canonical" (UTF-8, comma, ISO dates, English header),
            "mixed" (stores cycle through every variant of `VARIANTS`, the
            real shapes stores send), or one variant name for all files.

    Returns:
        The files written, sorted by day then store.

    Raises:
        ValueError: unknown `formats`, negative sizes, or no stores or days.
    """
    store_ids = list(range(1, stores + 1)) if isinstance(stores, int) else list(stores)
    day_list = (
        list(days)
        if days is not None
        else [start + timedelta(days=offset) for offset in range(ndays)]
    )
    if formats != "mixed" and formats not in VARIANTS:
        raise ValueError(f"formats must be 'mixed' or one of {sorted(VARIANTS)}")
    if not store_ids or not day_list or rows_per_store < 0:
        raise ValueError("need at least one store and one day, and rows_per_store >= 0")

    out = Path(out_dir)
    catalog = _Catalog.build(seed)
    invoice = FIRST_INVOICE
    written: list[Path] = []
    entries: list[dict[str, object]] = []
    for day in sorted(day_list):
        for store in sorted(store_ids):
            variant = formats
            if formats == "mixed":
                variant = _MIXED_ORDER[(store - 1) % len(_MIXED_ORDER)]
            path = out / day.isoformat() / f"store_{store:02d}_{day.isoformat()}.csv"
            rng = np.random.default_rng([seed, store, day.toordinal()])
            entry, invoice = _write_file(
                path, rng, catalog, store, day, rows_per_store, variant, invoice
            )
            entry["path"] = path.relative_to(out).as_posix()
            written.append(path)
            entries.append(entry)

    _write_manifest(out, entries, seed, store_ids, day_list, rows_per_store, formats)
    return written


@dataclass(frozen=True)
class _Catalog:
    """Products on sale: codes, descriptions, prices and popularity."""

    codes: pa.Array
    descriptions: list[str]
    prices: np.ndarray
    weights: np.ndarray
    manual: int

    @classmethod
    def build(cls, seed: int, size: int = 3_000) -> _Catalog:
        rng = np.random.default_rng([seed, 0xC0DE])
        numbers = rng.choice(np.arange(10_000, 100_000), size=size, replace=False)
        letters = rng.choice(list("ABCDEFGHJKLMNPRSTUVW"), size=size)
        lettered = rng.random(size) < 0.18
        codes = [
            f"{n}{c if flag else ''}"
            for n, c, flag in zip(numbers, letters, lettered, strict=True)
        ]
        descriptions = [_description(rng) for _ in range(size)]
        prices = rng.choice(_PRICES, size=size)
        popularity = 1.0 / (np.arange(size) + 10.0) ** 0.9
        share = sum(weight for *_, weight in _SERVICES)
        weights = np.concatenate(
            [popularity / popularity.sum() * (1 - share), [s[3] for s in _SERVICES]]
        )

        codes += [code for code, *_ in _SERVICES]
        descriptions += [text for _, text, *_ in _SERVICES] + _ADJUSTMENTS
        prices = np.concatenate([prices, [price for _, _, price, _ in _SERVICES]])
        manual = size + [code for code, *_ in _SERVICES].index("M")
        return cls(
            pa.array(codes), descriptions, prices, weights / weights.sum(), manual
        )


def _description(rng: np.random.Generator) -> str:
    def pick(kind: str) -> str:
        words = _WORDS[kind].split("/")
        return words[rng.integers(len(words))]

    roll = rng.random()
    if roll < 0.04:
        text = f"{pick('thing')}, {pick('design')} DESIGN"
    elif roll < 0.06:
        text = f'LETTER "{rng.choice(list("ABCDEFGHIJ"))}" {pick("thing")}'
    elif roll < 0.35:
        text = f"SET OF {rng.integers(2, 13)} {pick('colour')} {pick('thing')}S"
    else:
        text = f"{pick('adjective')} {pick('colour')} {pick('thing')}"
    return text + (" " if rng.random() < 0.08 else "")


@dataclass(frozen=True)
class _Lines:
    """One slice of drawn sales lines, numbers only (text comes later)."""

    kinds: np.ndarray  # per invoice: 0 sale, 1 return, 2 stock adjustment
    owner: np.ndarray  # per line: index of its invoice
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray  # pence
    text: np.ndarray  # index into the catalogue's descriptions

    @property
    def cents(self) -> np.ndarray:
        cents: np.ndarray = self.quantity * self.price
        return cents


def _write_file(
    path: Path,
    rng: np.random.Generator,
    catalog: _Catalog,
    store: int,
    day: date,
    rows: int,
    variant: str,
    invoice: int,
) -> tuple[dict[str, object], int]:
    fmt, spanish = VARIANTS[variant]
    names = STORE_NAMES.get(store, (f"Store {store}", f"Tienda {store}"))
    header = fmt.delimiter.join(CANONICAL if fmt.header == "es" else ENGLISH)
    head = (("\ufeff" if fmt.bom else "") + header + fmt.newline).encode(fmt.encoding)
    day_text = day.strftime("%d/%m/%Y" if fmt.date_format == "dmy" else "%Y-%m-%d")
    constants = (str(store), day_text, names[spanish] + fmt.newline)
    digest = hashlib.sha256(head)
    sums = dict.fromkeys(["quantity", "cents", "invoices", "repeats"], 0)

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(head)
        for done in range(0, rows, _SLICE_ROWS):
            lines = _draw(rng, catalog, min(rows - done, _SLICE_ROWS))
            text = _render(rng, catalog, lines, fmt, invoice + sums["invoices"])
            joined = pc.binary_join_element_wise(
                *(pa.scalar(value) for value in constants[:2]),
                *text,
                pa.scalar(constants[2]),
                fmt.delimiter,
            )
            body = _body_bytes(joined, fmt.encoding)
            handle.write(body)
            digest.update(body)
            sums["quantity"] += int(lines.quantity.sum())
            sums["cents"] += int(lines.cents.sum())
            sums["invoices"] += len(lines.kinds)
            sums["repeats"] += _repeats(lines)

    entry: dict[str, object] = {
        "format": variant,
        "location_id": store,
        "date": day.isoformat(),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "rows": rows,
        "sum_quantity": sums["quantity"],
        "sum_line_total": str(Decimal(sums["cents"]).scaleb(-2)),
        "distinct_invoices": sums["invoices"],
        "exact_duplicate_lines": sums["repeats"],
    }
    return entry, invoice + sums["invoices"]


def _draw(rng: np.random.Generator, catalog: _Catalog, rows: int) -> _Lines:
    """`rows` sales lines making up whole invoices."""
    kinds, sizes = _invoices(rng, rows)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    kind = kinds[owner]

    product = rng.choice(len(catalog.weights), size=rows, p=catalog.weights)
    quantity = rng.choice(_QUANTITIES, size=rows, p=_QUANTITY_ODDS)
    quantity = np.where(kind == 1, -np.minimum(quantity, 12), quantity)
    price = catalog.prices[product]
    manual = product == catalog.manual
    price[manual] = rng.integers(50, 30_000, size=int(manual.sum()))
    price[rng.random(rows) < 0.004] = 0
    text = product.copy()

    adjust = kind == 2
    count = int(adjust.sum())
    quantity[adjust] = -rng.integers(1, 60, size=count)
    price[adjust] = 0
    first_note = len(catalog.descriptions) - len(_ADJUSTMENTS)
    text[adjust] = first_note + rng.integers(0, len(_ADJUSTMENTS), size=count)

    # A repeated line copies the nearest earlier original of its invoice.
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    opens = np.zeros(rows, dtype=bool)
    opens[starts] = True
    repeat = (rng.random(rows) < 0.01) & ~opens
    source = np.maximum.accumulate(np.where(repeat, 0, np.arange(rows)))
    return _Lines(
        kinds, owner, product[source], quantity[source], price[source], text[source]
    )


def _repeats(lines: _Lines) -> int:
    """Lines identical to an earlier one (only lines of one invoice can be)."""
    keys = (lines.text, lines.price, lines.quantity, lines.product, lines.owner)
    order = np.lexsort(keys)
    ranked = np.stack([key[order] for key in keys])
    return int(np.all(ranked[:, 1:] == ranked[:, :-1], axis=0).sum())


def _invoices(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Kinds (0 sale, 1 return, 2 stock adjustment) and sizes summing to rows."""
    kinds_parts, size_parts, total = [], [], 0
    while total < rows:
        batch = rows // 8 + 16
        kinds = rng.choice(3, size=batch, p=[0.86, 0.13, 0.01])
        sizes = np.where(kinds == 0, rng.geometric(1 / 16, size=batch), 1)
        sizes = np.where(kinds == 1, rng.integers(1, 4, size=batch), sizes)
        kinds_parts.append(kinds)
        size_parts.append(sizes)
        total += int(sizes.sum())

    kinds = np.concatenate(kinds_parts)
    sizes = np.concatenate(size_parts)
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, rows)) + 1
    sizes = sizes[:count].copy()
    sizes[-1] -= int(ends[count - 1]) - rows
    return kinds[:count], sizes


def _render(
    rng: np.random.Generator,
    catalog: _Catalog,
    lines: _Lines,
    fmt: ExportFormat,
    invoice: int,
) -> list[pa.Array]:
    """Text columns from invoice number to customer id, as the file shows them."""
    count = len(lines.kinds)
    prefix = pc.take(pa.array(["", "C", ""]), pa.array(lines.kinds))
    numbers = pc.cast(pa.array(np.arange(invoice, invoice + count)), pa.string())
    invoices = pc.binary_join_element_wise(prefix, numbers, "")

    minutes = np.sort(rng.integers(8 * 60, 20 * 60, size=count))
    hours = pc.utf8_lpad(pc.cast(pa.array(minutes // 60), pa.string()), 2, "0")
    mins = pc.utf8_lpad(pc.cast(pa.array(minutes % 60), pa.string()), 2, "0")
    times = pc.binary_join_element_wise(hours, mins, ":")

    guest = (rng.random(count) < 0.34) | (lines.kinds == 2)
    ids = pa.array(rng.integers(12_346, 18_288, size=count), mask=guest)
    customers = pc.fill_null(pc.cast(ids, pa.string()), "")

    shown = [_quoted(item, fmt.delimiter) for item in catalog.descriptions]
    owner = pa.array(lines.owner)
    return [
        pc.take(invoices, owner),
        pc.take(catalog.codes, pa.array(lines.product)),
        pc.cast(pa.array(lines.quantity), pa.string()),
        _money_text(lines.price, fmt.decimal),
        _money_text(lines.cents, fmt.decimal),
        pc.take(pa.array(shown), pa.array(lines.text)),
        pc.take(times, owner),
        pc.take(customers, owner),
    ]


def _quoted(value: str, delimiter: str) -> str:
    if any(mark in value for mark in (delimiter, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _money_text(cents: np.ndarray, mark: str) -> pa.Array:
    """Whole cents as text with two decimals, e.g. -50 -> "-0.50"."""
    size = np.abs(cents)
    units = pc.cast(pa.array(size // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(size % 100), pa.string()), 2, "0")
    sign = pc.take(pa.array(["", "-"]), pa.array((cents < 0).astype(np.int8)))
    return pc.binary_join_element_wise(sign, units, mark, fraction, "")


def _body_bytes(lines: pa.Array, encoding: str) -> bytes | memoryview:
    # Each line already ends in its line break, so the array's character
    # buffer is the file body as it stands.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    body = memoryview(lines.buffers()[2])[start:end]
    return body if encoding == "utf-8" else str(body, "utf-8").encode(encoding)


def _write_manifest(
    out: Path,
    entries: list[dict[str, object]],
    seed: int,
    stores: list[int],
    days: list[date],
    rows: int,
    formats: str,
) -> None:
    def total(key: str) -> int:
        return sum(int(str(entry[key])) for entry in entries)

    money = sum(Decimal(str(entry["sum_line_total"])) for entry in entries)
    manifest = {
        "generator": {
            "seed": seed,
            "stores": sorted(stores),
            "days": [day.isoformat() for day in sorted(days)],
            "rows_per_store": rows,
            "formats": formats,
        },
        "overall": {
            "files": len(entries),
            "rows": total("rows"),
            "sum_quantity": total("sum_quantity"),
            "sum_line_total": str(Decimal(money).quantize(Decimal("0.01"))),
            "distinct_invoices": total("distinct_invoices"),
            "exact_duplicate_lines": total("exact_duplicate_lines"),
        },
        "files": entries,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (out / MANIFEST_NAME).write_text(text, encoding="utf-8")
