"""The data routes, against a real Redis and a real DuckDB file.

`/ventas` reads seeded sales lines; `/usuarios` and `/pedidos` write under
exclusive leases and are read back through the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from backend.schema import ensure_schema
from backend.settings import Settings
from tests.support import serving

pytestmark = pytest.mark.anyio

# -- fixtures ---------------------------------------------------------------

Params = dict[str, str | int]


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    """Settings on a fresh file with the test's own key prefix."""
    return Settings(
        db_path=str(tmp_path / "ventas.duckdb"),
        redis_url=redis_url,
        key_prefix=key_prefix,
    )


def error_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {str(error["loc"][-1]) for error in response.json()["detail"]}


# -- sales ------------------------------------------------------------------

D3, D4, D5 = date(2011, 1, 3), date(2011, 1, 4), date(2011, 1, 5)

# (ubicacion, fecha, factura, producto, descripcion, cantidad, precio, monto)
LINEAS = [
    (1, D3, "F100", "P1", "TAZA", 3, "2.55", "7.65"),
    (1, D3, "F100", "P2", "VELA", 1, "10.10", "10.10"),
    (1, D3, "F101", "P1", "TAZA", 2, "2.55", "5.10"),
    (2, D3, "F200", "85123A", "CORAZON", 6, "2.95", "17.70"),
    (1, D4, "C102", "P1", "TAZA", -1, "2.55", "-2.55"),
    (1, D4, "F103", "P3", "POSTAL", 12, "0.42", "5.04"),
    (2, D4, "F201", "P2", "VELA", 1, "10.10", "10.10"),
    (2, D4, "F201", "P2", "VELA", 1, "10.10", "10.10"),
    (1, D5, "F104", "P4", "CLIP", 1000, "0.001", "1.000"),
]


def seed_sales(db_path: str) -> None:
    """Write the sales lines before the backend starts (nobody else is on)."""
    con = duckdb.connect(db_path)
    try:
        ensure_schema(con)
        con.executemany(
            "INSERT INTO ventas_raw (ubicacion_id, fecha, numero_factura,"
            " producto_id, descripcion, cantidad, precio_unitario, monto_total)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [list(line) for line in LINEAS],
        )
    finally:
        con.close()


@pytest.fixture
async def sales(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    seed_sales(settings.db_path)
    async with serving(settings) as client:
        yield client


async def test_reads_work_on_a_new_empty_database(settings: Settings) -> None:
    """A brand-new file answers every read with empty lists, not errors."""
    async with serving(settings) as client:
        page = await client.get("/ventas")
        resumen = await client.get("/ventas/resumen")
        top = await client.get("/ventas/top-productos")

    assert page.json() == {"items": [], "limit": 100, "offset": 0, "siguiente": None}
    assert resumen.json()["items"] == []
    assert top.json()["items"] == []


async def test_ventas_lists_lines_in_order_with_exact_money(
    sales: httpx.AsyncClient,
) -> None:
    """Lines come by day and store; money is an exact decimal string."""
    response = await sales.get("/ventas", params={"desde": "2011-01-03"})

    body = response.json()
    assert response.status_code == 200
    assert [(i["fecha"], i["ubicacion_id"]) for i in body["items"]][:4] == [
        ("2011-01-03", 1),
        ("2011-01-03", 1),
        ("2011-01-03", 1),
        ("2011-01-03", 2),
    ]
    first = body["items"][0]
    assert first["precio_unitario"] == "2.55"
    assert first["monto_total"] == "7.65"
    assert body["items"][-1]["precio_unitario"] == "0.001"
    assert body["siguiente"] is None


async def test_ventas_filters_by_window_and_store(sales: httpx.AsyncClient) -> None:
    """desde, hasta and ubicacion_id all narrow the lines."""
    params: Params = {"desde": "2011-01-04", "hasta": "2011-01-04", "ubicacion_id": 2}
    response = await sales.get("/ventas", params=params)

    items = response.json()["items"]
    assert [(i["numero_factura"], i["monto_total"]) for i in items] == [
        ("F201", "10.10"),
        ("F201", "10.10"),
    ]


async def test_keyset_cursor_and_offset_give_the_same_pages(
    sales: httpx.AsyncClient,
) -> None:
    """Following 'siguiente' walks every line once, like offsets do."""
    seen: list[dict[str, Any]] = []
    params: Params = {"limit": 4}
    while True:
        body = (await sales.get("/ventas", params=params)).json()
        seen.extend(body["items"])
        if body["siguiente"] is None:
            break
        params = {"limit": 4, "cursor": body["siguiente"]}

    by_offset = []
    for offset in (0, 4, 8):
        page = await sales.get("/ventas", params={"limit": 4, "offset": offset})
        by_offset.extend(page.json()["items"])

    assert len(seen) == len(LINEAS)
    assert seen == by_offset


async def test_ventas_validation_names_the_fields(sales: httpx.AsyncClient) -> None:
    """Bad query parameters are 422s that name each parameter."""
    cases: list[tuple[Params, str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"desde": "ayer"}, "desde"),
        ({"desde": "2011-01-05", "hasta": "2011-01-01"}, "hasta"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "2011-01-03~1~0", "offset": 4}, "offset"),
        ({"ubicacion_id": 0}, "ubicacion_id"),
    ]
    for params, field in cases:
        response = await sales.get("/ventas", params=params)
        assert error_fields(response) == {field}, params


async def test_resumen_sums_money_and_counts_distinct_invoices(
    sales: httpx.AsyncClient,
) -> None:
    """Per day and store: exact totals, invoices counted once."""
    params = {"desde": "2011-01-03", "hasta": "2011-01-04"}
    response = await sales.get("/ventas/resumen", params=params)

    body = response.json()
    assert body["desde"] == "2011-01-03"
    rows = {(r["fecha"], r["ubicacion_id"]): r for r in body["items"]}
    assert set(rows) == {
        ("2011-01-03", 1),
        ("2011-01-03", 2),
        ("2011-01-04", 1),
        ("2011-01-04", 2),
    }
    assert rows["2011-01-03", 1]["monto_total"] == "22.85"
    assert rows["2011-01-03", 1]["facturas"] == 2
    assert rows["2011-01-04", 1]["monto_total"] == "2.49"
    assert rows["2011-01-04", 2] == {
        "fecha": "2011-01-04",
        "ubicacion_id": 2,
        "monto_total": "20.20",
        "facturas": 1,
        "lineas": 2,
    }


async def test_top_productos_ranks_by_net_quantity(
    sales: httpx.AsyncClient,
) -> None:
    """Returns subtract; the limit keeps the first N."""
    params: Params = {"desde": "2011-01-03", "hasta": "2011-01-04", "limit": 3}
    response = await sales.get("/ventas/top-productos", params=params)

    items = response.json()["items"]
    assert [(i["producto_id"], i["cantidad"]) for i in items] == [
        ("P3", 12),
        ("85123A", 6),
        ("P1", 4),
    ]
    assert items[2]["monto_total"] == "10.20"

    bad = await sales.get("/ventas/top-productos", params={"limit": 101})
    assert error_fields(bad) == {"limit"}


# -- users and orders -------------------------------------------------------


async def test_crear_usuario_returns_201_and_refuses_duplicates(
    settings: Settings,
) -> None:
    """The email is normalised; the same email again is a 409."""
    async with serving(settings) as client:
        created = await client.post(
            "/usuarios", json={"nombre": " Ana ", "email": "Ana@Example.com"}
        )
        again = await client.post(
            "/usuarios", json={"nombre": "Otra", "email": "ana@example.COM"}
        )

    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "nombre", "email", "creado_en"}
    assert (body["nombre"], body["email"]) == ("Ana", "ana@example.com")
    assert again.status_code == 409
    assert "already registered" in again.json()["detail"]


async def test_usuario_validation_names_the_fields(settings: Settings) -> None:
    """Missing, malformed and unexpected fields are 422s naming them."""
    async with serving(settings) as client:
        missing = await client.post("/usuarios", json={"nombre": "Ana"})
        bad = await client.post("/usuarios", json={"nombre": "", "email": "x@"})
        extra = await client.post(
            "/usuarios", json={"nombre": "A", "email": "a@b.co", "rol": "admin"}
        )

    assert error_fields(missing) == {"email"}
    assert error_fields(bad) == {"nombre", "email"}
    assert error_fields(extra) == {"rol"}


async def test_pedido_lifecycle_is_read_back_after_each_write(
    settings: Settings,
) -> None:
    """Create, read, pay, ship: every acknowledged write is visible next."""
    async with serving(settings) as client:
        assert (await client.get("/ventas")).status_code == 200  # reader pooled
        usuario = (
            await client.post("/usuarios", json={"nombre": "Eva", "email": "e@x.es"})
        ).json()
        pedido = {
            "usuario_id": usuario["id"],
            "ubicacion_id": 3,
            "producto_id": "85123A",
            "cantidad": 2,
        }
        created = await client.post("/pedidos", json=pedido)
        pedido_id = created.json()["id"]
        read = await client.get(f"/pedidos/{pedido_id}")
        paid = await client.patch(f"/pedidos/{pedido_id}", json={"estado": "pagado"})
        same = await client.patch(f"/pedidos/{pedido_id}", json={"estado": "pagado"})
        shipped = await client.patch(
            f"/pedidos/{pedido_id}", json={"estado": "enviado"}
        )
        final = await client.get(f"/pedidos/{pedido_id}")

    assert created.status_code == 201, created.text
    assert created.json()["estado"] == "pendiente"
    assert read.json() == created.json()
    assert paid.json()["estado"] == same.json()["estado"] == "pagado"
    assert shipped.json()["estado"] == "enviado"
    assert final.json() == shipped.json()
    assert final.json()["actualizado_en"] >= final.json()["creado_en"]


async def test_pedido_errors(settings: Settings) -> None:
    """Unknown user 422, unknown order 404, backwards change 409, bad body 422."""
    async with serving(settings) as client:
        usuario = (
            await client.post("/usuarios", json={"nombre": "Leo", "email": "l@x.es"})
        ).json()
        body = {"usuario_id": usuario["id"], "ubicacion_id": 1, "producto_id": "P1"}
        unknown_user = await client.post(
            "/pedidos", json={**body, "usuario_id": 999_999, "cantidad": 1}
        )
        zero = await client.post("/pedidos", json={**body, "cantidad": 0})
        pedido = (await client.post("/pedidos", json={**body, "cantidad": 1})).json()
        cancelled = await client.patch(
            f"/pedidos/{pedido['id']}", json={"estado": "cancelado"}
        )
        revived = await client.patch(
            f"/pedidos/{pedido['id']}", json={"estado": "pendiente"}
        )
        bad_state = await client.patch(
            f"/pedidos/{pedido['id']}", json={"estado": "perdido"}
        )
        missing_get = await client.get("/pedidos/999999")
        missing_patch = await client.patch("/pedidos/999999", json={"estado": "pagado"})
        bad_id = await client.get("/pedidos/0")

    assert error_fields(unknown_user) == {"usuario_id"}
    assert "POST /usuarios" in unknown_user.json()["detail"][0]["msg"]
    assert error_fields(zero) == {"cantidad"}
    assert cancelled.status_code == 200
    assert revived.status_code == 409
    assert "final state" in revived.json()["detail"]
    assert error_fields(bad_state) == {"estado"}
    assert missing_get.status_code == missing_patch.status_code == 404
    assert error_fields(bad_id) == {"pedido_id"}


async def test_concurrent_reads_and_writes_all_succeed(settings: Settings) -> None:
    """Readers share the pooled lease and step aside for each writer in turn."""
    async with serving(settings) as client:

        async def register(n: int) -> httpx.Response:
            body = {"nombre": f"U{n}", "email": f"u{n}@x.es"}
            return await client.post("/usuarios", json=body)

        responses = await asyncio.gather(
            *[client.get("/ventas/resumen") for _ in range(30)],
            *[register(n) for n in range(8)],
            *[client.get("/ventas") for _ in range(30)],
        )
        ids = {r.json()["id"] for r in responses if r.status_code == 201}
        pedidos = [
            await client.post(
                "/pedidos",
                json={
                    "usuario_id": i,
                    "ubicacion_id": 1,
                    "producto_id": "P",
                    "cantidad": 1,
                },
            )
            for i in sorted(ids)
        ]

    assert sorted(r.status_code for r in responses) == [200] * 60 + [201] * 8
    assert len(ids) == 8
    assert all(p.status_code == 201 for p in pedidos)


async def test_hostile_inputs_get_4xx_never_500(settings: Settings) -> None:
    """Out-of-range numbers, forged cursors, lone surrogates: 422, not 500."""
    async with serving(settings) as client:
        cursor = await client.get(
            "/ventas", params={"cursor": "2011-01-01~99999999999~5"}
        )
        big_row = await client.get(
            "/ventas", params={"cursor": "2011-01-01~1~" + "9" * 30}
        )
        store = await client.post(
            "/pedidos",
            json={
                "usuario_id": 1,
                "ubicacion_id": 99999999999,
                "producto_id": "85123A",
                "cantidad": 1,
            },
        )
        surrogate = await client.post(
            "/usuarios",
            content=b'{"nombre": "\\ud800", "email": 5}',
            headers={"content-type": "application/json"},
        )

    assert [r.status_code for r in (cursor, big_row, store, surrogate)] == [422] * 4
