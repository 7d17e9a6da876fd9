"""Orders: create, read, move through their states.

States only move forward: pendiente becomes pagado or cancelado, pagado
becomes enviado or cancelado, and enviado and cancelado are final. Asking
for the state an order already has is accepted and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..deps import Cursor, DatabaseDep, fetch_dicts
from ..errors import ConflictError, NotFoundError, UnknownReferenceError
from ..schema import Estado

__all__ = ["TRANSICIONES", "router"]

router = APIRouter(prefix="/pedidos", tags=["pedidos"])

TRANSICIONES: dict[Estado, frozenset[Estado]] = {
    Estado.PENDIENTE: frozenset({Estado.PAGADO, Estado.CANCELADO}),
    Estado.PAGADO: frozenset({Estado.ENVIADO, Estado.CANCELADO}),
    Estado.ENVIADO: frozenset(),
    Estado.CANCELADO: frozenset(),
}

MAX_CANTIDAD = 100_000

_COLUMNS = (
    "id, usuario_id, ubicacion_id, producto_id, cantidad, estado, creado_en,"
    " actualizado_en"
)

ProductoId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
]
PedidoId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class PedidoNuevo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    usuario_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    ubicacion_id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    producto_id: ProductoId
    cantidad: Annotated[int, Field(ge=1, le=MAX_CANTIDAD)]


class CambioEstado(BaseModel):
    model_config = ConfigDict(extra="forbid")

    estado: Estado


class Pedido(BaseModel):
    id: int
    usuario_id: int
    ubicacion_id: int
    producto_id: str
    cantidad: int
    estado: Estado
    creado_en: datetime
    actualizado_en: datetime


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Pedido)
async def crear_pedido(body: PedidoNuevo, database: DatabaseDep) -> Pedido:
    """Place an order for an existing user; it starts as pendiente."""
    row = await database.write(lambda cur: _insert(cur, body))
    return Pedido.model_validate(row)


@router.get("/{pedido_id}", response_model=Pedido)
async def leer_pedido(pedido_id: PedidoId, database: DatabaseDep) -> Pedido:
    """One order."""
    row = await database.read(lambda cur: _load(cur, pedido_id))
    return Pedido.model_validate(row)


@router.patch("/{pedido_id}", response_model=Pedido)
async def cambiar_estado(
    pedido_id: PedidoId, body: CambioEstado, database: DatabaseDep
) -> Pedido:
    """Move an order to another state, if its current state allows it."""
    row = await database.write(lambda cur: _transition(cur, pedido_id, body.estado))
    return Pedido.model_validate(row)


def _insert(cur: Cursor, body: PedidoNuevo) -> dict[str, object]:
    known = cur.execute(
        "SELECT 1 FROM usuarios WHERE id = ?", [body.usuario_id]
    ).fetchone()
    if known is None:
        raise UnknownReferenceError(
            "usuario_id",
            f"usuario {body.usuario_id} does not exist; create it first with"
            " POST /usuarios",
        )

    rows = fetch_dicts(
        cur,
        "INSERT INTO pedidos (usuario_id, ubicacion_id, producto_id, cantidad)"
        f" VALUES (?, ?, ?, ?) RETURNING {_COLUMNS}",
        [body.usuario_id, body.ubicacion_id, body.producto_id, body.cantidad],
    )
    return rows[0]


def _load(cur: Cursor, pedido_id: int) -> dict[str, object]:
    rows = fetch_dicts(cur, f"SELECT {_COLUMNS} FROM pedidos WHERE id = ?", [pedido_id])
    if not rows:
        raise NotFoundError(f"pedido {pedido_id} does not exist")

    return rows[0]


def _transition(cur: Cursor, pedido_id: int, estado: Estado) -> dict[str, object]:
    current = _load(cur, pedido_id)
    before = Estado(str(current["estado"]))
    if before is estado:
        return current

    if estado not in TRANSICIONES[before]:
        allowed = ", ".join(sorted(e.value for e in TRANSICIONES[before]))
        raise ConflictError(
            f"pedido {pedido_id} is {before.value} and cannot become"
            f" {estado.value}; from {before.value} it can become:"
            f" {allowed or 'nothing (final state)'}"
        )

    rows = fetch_dicts(
        cur,
        "UPDATE pedidos SET estado = ?, actualizado_en = now() WHERE id = ?"
        f" RETURNING {_COLUMNS}",
        [estado.value, pedido_id],
    )
    return rows[0]
