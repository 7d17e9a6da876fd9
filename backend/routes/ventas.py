"""Sales reads: lines page by page, a daily summary per store, top products.

The lines query is filtered on ``fecha`` first, ordered by
``fecha, ubicacion_id, rowid`` and LIMITed: DuckDB skips the row groups whose
date range cannot qualify (the ETL loads day by day, so dates cluster) and
keeps only a top-N heap instead of sorting the table. A page is addressed by
``offset`` (capped at `MAX_OFFSET`) or, for deep paging, by the keyset
cursor in ``siguiente``, which resumes after the last line shown instead of
counting the lines before it (``rowid`` is stable because sales lines are
only ever appended). The summaries aggregate the whole window, so their
cost grows with it.

Money is returned as decimal strings (``"7.65"``): exact to the cent, at
least two decimals, more only where the stored value has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, PlainSerializer

from ..deps import Cursor, DatabaseDep, fetch_dicts

__all__ = ["router"]

router = APIRouter(prefix="/ventas", tags=["ventas"])

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
MAX_TOP = 100

_CENT = Decimal("0.01")


def money_text(value: Decimal) -> str:
    """A decimal as text: exact, with at least two decimals."""
    normalized = value.normalize()
    if int(normalized.as_tuple().exponent) > -2:
        normalized = value.quantize(_CENT)
    return format(normalized, "f")


Money = Annotated[Decimal, PlainSerializer(money_text, return_type=str)]


class VentaLinea(BaseModel):
    ubicacion_id: int
    fecha: date
    numero_factura: str
    producto_id: str
    descripcion: str | None
    cantidad: int
    precio_unitario: Money
    monto_total: Money
    cliente_id: int | None


class VentasPagina(BaseModel):
    items: list[VentaLinea]
    limit: int
    offset: int
    siguiente: str | None = None


class ResumenDia(BaseModel):
    fecha: date
    ubicacion_id: int
    monto_total: Money
    facturas: int
    lineas: int


class Resumen(BaseModel):
    desde: date | None
    hasta: date | None
    items: list[ResumenDia]


class ProductoTop(BaseModel):
    producto_id: str
    descripcion: str | None
    cantidad: int
    monto_total: Money
    facturas: int


class TopProductos(BaseModel):
    desde: date | None
    hasta: date | None
    items: list[ProductoTop]


@dataclass(frozen=True)
class Window:
    desde: date | None
    hasta: date | None


def date_window(
    desde: Annotated[date | None, Query(description="first day, inclusive")] = None,
    hasta: Annotated[date | None, Query(description="last day, inclusive")] = None,
) -> Window:
    if desde is not None and hasta is not None and desde > hasta:
        raise _invalid(
            "hasta", str(hasta), f"hasta ({hasta}) is before desde ({desde})"
        )

    return Window(desde=desde, hasta=hasta)


WindowDep = Annotated[Window, Depends(date_window)]


INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Keyset:
    """Where the previous page ended: its last line's sort key."""

    fecha: date
    ubicacion_id: int
    fila: int

    @classmethod
    def of(cls, row: dict[str, object]) -> Keyset:
        return cls(
            fecha=cast(date, row["fecha"]),
            ubicacion_id=cast(int, row["ubicacion_id"]),
            fila=cast(int, row["fila"]),
        )

    def encode(self) -> str:
        return f"{self.fecha.isoformat()}~{self.ubicacion_id}~{self.fila}"

    @classmethod
    def decode(cls, text: str) -> Keyset:
        try:
            day, store, row = text.split("~")
            keyset = cls(date.fromisoformat(day), int(store), int(row))
            if not (0 <= keyset.ubicacion_id <= INT32_MAX and 0 <= keyset.fila < 2**63):
                raise ValueError(text)
            return keyset
        except ValueError:
            raise _invalid(
                "cursor",
                text,
                "not a cursor from this API; pass the 'siguiente' value of the"
                " previous page unchanged",
            ) from None


@router.get("", response_model=VentasPagina)
async def listar_ventas(
    database: DatabaseDep,
    window: WindowDep,
    ubicacion_id: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[
        int,
        Query(ge=0, le=MAX_OFFSET, description="for deeper pages use cursor"),
    ] = 0,
    cursor: Annotated[
        str | None, Query(description="the previous page's 'siguiente'")
    ] = None,
) -> VentasPagina:
    """Sales lines by day, store and load order, one page at a time."""
    after = Keyset.decode(cursor) if cursor is not None else None
    if after is not None and offset:
        raise _invalid("offset", str(offset), "use either offset or cursor")

    rows = await database.read(
        lambda cur: _page(cur, window, ubicacion_id, limit, offset, after)
    )

    siguiente = None
    if len(rows) > limit:
        rows = rows[:limit]
        siguiente = Keyset.of(rows[-1]).encode()
    items = [VentaLinea.model_validate(row) for row in rows]
    return VentasPagina(items=items, limit=limit, offset=offset, siguiente=siguiente)


@router.get("/resumen", response_model=Resumen)
async def resumen_ventas(database: DatabaseDep, window: WindowDep) -> Resumen:
    """Per day and store: amount sold, distinct invoices and lines."""
    where, params = _where(window)
    sql = f"""
        SELECT fecha, ubicacion_id, sum(monto_total) AS monto_total,
               count(DISTINCT numero_factura) AS facturas, count(*) AS lineas
        FROM ventas_raw {where}
        GROUP BY fecha, ubicacion_id
        ORDER BY fecha, ubicacion_id
    """
    rows = await database.read(lambda cur: fetch_dicts(cur, sql, params))
    items = [ResumenDia.model_validate(row) for row in rows]
    return Resumen(desde=window.desde, hasta=window.hasta, items=items)


@router.get("/top-productos", response_model=TopProductos)
async def top_productos(
    database: DatabaseDep,
    window: WindowDep,
    limit: Annotated[int, Query(ge=1, le=MAX_TOP)] = 10,
) -> TopProductos:
    """Products by net quantity sold (returns subtract), highest first."""
    where, params = _where(window)
    sql = f"""
        SELECT producto_id, max(descripcion) AS descripcion,
               sum(cantidad) AS cantidad, sum(monto_total) AS monto_total,
               count(DISTINCT numero_factura) AS facturas
        FROM ventas_raw {where}
        GROUP BY producto_id
        ORDER BY cantidad DESC, producto_id
        LIMIT ?
    """
    rows = await database.read(lambda cur: fetch_dicts(cur, sql, [*params, limit]))
    items = [ProductoTop.model_validate(row) for row in rows]
    return TopProductos(desde=window.desde, hasta=window.hasta, items=items)


def _where(
    window: Window,
    ubicacion_id: int | None = None,
    after: Keyset | None = None,
) -> tuple[str, list[object]]:
    """A WHERE clause (fixed text, values as parameters) and its values."""
    clauses: list[str] = []
    params: list[object] = []
    lower = window.desde
    if after is not None and (lower is None or after.fecha > lower):
        lower = after.fecha  # lets DuckDB skip earlier row groups outright
    if lower is not None:
        clauses.append("fecha >= ?")
        params.append(lower)
    if window.hasta is not None:
        clauses.append("fecha <= ?")
        params.append(window.hasta)
    if ubicacion_id is not None:
        clauses.append("ubicacion_id = ?")
        params.append(ubicacion_id)
    if after is not None:
        clauses.append(
            "(fecha, ubicacion_id, rowid) > (?::DATE, ?::INTEGER, ?::BIGINT)"
        )
        params.extend([after.fecha, after.ubicacion_id, after.fila])

    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, params


def _page(
    cur: Cursor,
    window: Window,
    ubicacion_id: int | None,
    limit: int,
    offset: int,
    after: Keyset | None,
) -> list[dict[str, object]]:
    where, params = _where(window, ubicacion_id, after)
    sql = f"""
        SELECT ubicacion_id, fecha, numero_factura, producto_id, descripcion,
               cantidad, precio_unitario, monto_total, cliente_id,
               rowid AS fila
        FROM ventas_raw {where}
        ORDER BY fecha, ubicacion_id, rowid
        LIMIT ? OFFSET ?
    """
    return fetch_dicts(cur, sql, [*params, limit + 1, offset])


def _invalid(field: str, value: str, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, naming the query parameter."""
    error = {
        "type": "value_error",
        "loc": ("query", field),
        "msg": message,
        "input": value,
    }
    return RequestValidationError([error])
