"""PostgreSQL as the reference: the same tables, in a schema of this run's own.

The tables mirror the DuckDB ones: `ventas_raw` with the same columns and
types (DECIMAL(18,6) money, text product codes) plus a `bigserial` id,
which plays the part of DuckDB's `rowid` in the paged sales query; and
`usuarios` / `pedidos` with the backend's constraints. Tables are logged
(durable, like the DuckDB file) and the sales table has no index while
loading; `index_sales` adds the one the dashboards need, timed apart.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg import sql

from etl._columns import HEADER_NAMES

__all__ = ["PgConnection", "PgSchema", "copy_file"]

PgConnection = psycopg.Connection[tuple[object, ...]]

_SALES_DDL = sql.SQL("""
CREATE TABLE {table} (
    id BIGSERIAL,
    ubicacion_id INTEGER NOT NULL,
    fecha DATE NOT NULL,
    numero_factura VARCHAR NOT NULL,
    producto_id VARCHAR NOT NULL,
    cantidad BIGINT NOT NULL,
    precio_unitario NUMERIC(18,6) NOT NULL,
    monto_total NUMERIC(18,6) NOT NULL,
    descripcion VARCHAR,
    hora_factura VARCHAR,
    cliente_id BIGINT,
    nombre_ubicacion VARCHAR
)""")

_APP_DDL = sql.SQL("""
CREATE TABLE {usuarios} (
    id BIGSERIAL PRIMARY KEY,
    nombre VARCHAR NOT NULL,
    email VARCHAR NOT NULL UNIQUE,
    creado_en TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE {pedidos} (
    id BIGSERIAL PRIMARY KEY,
    usuario_id BIGINT NOT NULL REFERENCES {usuarios} (id),
    ubicacion_id INTEGER NOT NULL,
    producto_id VARCHAR NOT NULL,
    cantidad INTEGER NOT NULL CHECK (cantidad > 0),
    estado VARCHAR NOT NULL DEFAULT 'pendiente'
        CHECK (estado IN ('pendiente', 'pagado', 'enviado', 'cancelado')),
    creado_en TIMESTAMPTZ NOT NULL DEFAULT now(),
    actualizado_en TIMESTAMPTZ NOT NULL DEFAULT now()
)""")


class PgSchema:
    """One schema for this run, dropped (with everything in it) at the end."""

    def __init__(self, dsn: str, name: str):
        self.dsn = dsn
        self.name = name
        self.sales = sql.Identifier(name, "ventas_raw")
        self.usuarios = sql.Identifier(name, "usuarios")
        self.pedidos = sql.Identifier(name, "pedidos")

    def connect(self, autocommit: bool = True) -> PgConnection:
        return psycopg.connect(self.dsn, autocommit=autocommit)

    def create(self) -> None:
        self.drop()
        with self.connect() as con:
            con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))

    def reset_sales(self) -> None:
        """An empty sales table without index, as before a first load."""
        with self.connect() as con:
            con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.sales))
            con.execute(_SALES_DDL.format(table=self.sales))

    def reset_app(self) -> None:
        with self.connect() as con:
            con.execute(
                sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                    self.pedidos, self.usuarios
                )
            )
            con.execute(_APP_DDL.format(usuarios=self.usuarios, pedidos=self.pedidos))

    def index_sales(self) -> float:
        """Index (fecha, ubicacion_id) and analyze; returns the seconds it took."""
        started = time.monotonic()
        with self.connect() as con:
            con.execute(
                sql.SQL("CREATE INDEX ON {} (fecha, ubicacion_id)").format(self.sales)
            )
            con.execute(sql.SQL("VACUUM ANALYZE {}").format(self.sales))
        return time.monotonic() - started

    def count_sales(self) -> int:
        with self.connect() as con:
            row = con.execute(
                sql.SQL("SELECT count(*) FROM {}").format(self.sales)
            ).fetchone()
        return int(str(row[0])) if row else 0

    def drop(self) -> None:
        with self.connect() as con:
            con.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(self.name)
                )
            )


def copy_file(con: PgConnection, table: sql.Identifier, path: Path) -> None:
    """COPY one canonical CSV export into `table`, mapping its header.

    Raises:
        ValueError: a header column the product does not know.
    """
    with open(path, "rb") as source:
        header = source.readline().decode("utf-8-sig").strip().split(",")
        try:
            columns = [HEADER_NAMES[name.strip().lower()] for name in header]
        except KeyError as exc:
            raise ValueError(f"{path}: unknown header column {exc}") from None

        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        with con.cursor() as cur, cur.copy(statement) as copy:
            while block := source.read(1 << 20):
                copy.write(block)
