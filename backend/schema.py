"""The backend's own tables, `usuarios` and `pedidos`, next to the ETL's.

Ids come from sequences. Times are TIMESTAMPTZ, so clients get an explicit
UTC offset. The write path checks that an order's user exists before
inserting, to answer with a clear message; the FOREIGN KEY is the backstop.
"""

from __future__ import annotations

import enum

import duckdb

from etl.schema import ensure_sales_schema

__all__ = ["Estado", "ensure_schema"]


class Estado(enum.StrEnum):
    """States of an order."""

    PENDIENTE = "pendiente"
    PAGADO = "pagado"
    ENVIADO = "enviado"
    CANCELADO = "cancelado"


def _estado_check() -> str:
    values = ", ".join(f"'{estado.value}'" for estado in Estado)
    return f"estado IN ({values})"


def _ddl() -> str:
    return f"""
CREATE SEQUENCE IF NOT EXISTS usuarios_id_seq;
CREATE TABLE IF NOT EXISTS usuarios (
    id BIGINT PRIMARY KEY DEFAULT nextval('usuarios_id_seq'),
    nombre VARCHAR NOT NULL,
    email VARCHAR NOT NULL UNIQUE,
    creado_en TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE IF NOT EXISTS pedidos_id_seq;
CREATE TABLE IF NOT EXISTS pedidos (
    id BIGINT PRIMARY KEY DEFAULT nextval('pedidos_id_seq'),
    usuario_id BIGINT NOT NULL REFERENCES usuarios (id),
    ubicacion_id INTEGER NOT NULL,
    producto_id VARCHAR NOT NULL,
    cantidad INTEGER NOT NULL CHECK (cantidad > 0),
    estado VARCHAR NOT NULL DEFAULT '{Estado.PENDIENTE.value}'
        CHECK ({_estado_check()}),
    creado_en TIMESTAMPTZ NOT NULL DEFAULT now(),
    actualizado_en TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Operators' forced releases, kept in the file: Redis history is capped
-- and does not survive a flush.
CREATE TABLE IF NOT EXISTS fluxion_audit (
    registrado_en TIMESTAMPTZ NOT NULL DEFAULT now(),
    action VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    detail VARCHAR
);
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table the backend reads or writes (idempotent).

    Run it inside a write transaction: the ETL's tables come first, so reads
    of `ventas_raw` work on a brand-new, empty file.
    """
    ensure_sales_schema(con)
    con.execute(_ddl())
