"""Users: registration, one row per email."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints

from ..deps import Cursor, DatabaseDep, fetch_dicts
from ..errors import ConflictError

__all__ = ["router"]

router = APIRouter(prefix="/usuarios", tags=["usuarios"])

Nombre = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    ),
]


class UsuarioNuevo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nombre: Nombre
    email: Email


class Usuario(BaseModel):
    id: int
    nombre: str
    email: str
    creado_en: datetime


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Usuario)
async def crear_usuario(body: UsuarioNuevo, database: DatabaseDep) -> Usuario:
    """Register a user; the email (case-insensitive) must not exist yet."""
    row = await database.write(lambda cur: _insert(cur, body))
    return Usuario.model_validate(row)


def _insert(cur: Cursor, body: UsuarioNuevo) -> dict[str, object]:
    taken = cur.execute(
        "SELECT id FROM usuarios WHERE email = ?", [body.email]
    ).fetchone()
    if taken is not None:
        raise ConflictError(
            f"email {body.email} is already registered (usuario {taken[0]});"
            " use that user or another email"
        )

    rows = fetch_dicts(
        cur,
        "INSERT INTO usuarios (nombre, email) VALUES (?, ?)"
        " RETURNING id, nombre, email, creado_en",
        [body.nombre, body.email],
    )
    return rows[0]
