"""Tables the ETL writes: sales lines, and its own exactly-once bookkeeping.

Names are Spanish where the users' production file already has them
(`ventas_raw` and its columns), so the product can be pointed at that file.
Money is DECIMAL(18,6): exact, never float.

Each sales row carries the small integer `lote` of the batch that loaded it
rather than the batch's text id: a constant integer per chunk costs almost
nothing to insert and store, where a 66-character id on every row cost a
fifth of the insert time.
"""

from __future__ import annotations

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS ventas_raw (
    ubicacion_id INTEGER NOT NULL,
    fecha DATE NOT NULL,
    numero_factura VARCHAR NOT NULL,
    producto_id VARCHAR NOT NULL,
    cantidad BIGINT NOT NULL,
    precio_unitario DECIMAL(18,6) NOT NULL,
    monto_total DECIMAL(18,6) NOT NULL,
    descripcion VARCHAR,
    hora_factura VARCHAR,
    cliente_id BIGINT,
    nombre_ubicacion VARCHAR,
    linea BIGINT,          -- physical line in the source file
    lote BIGINT            -- etl_batches.lote of the chunk that loaded the row
);
-- A production table made before the ETL existed gains its two columns.
ALTER TABLE ventas_raw ADD COLUMN IF NOT EXISTS linea BIGINT;
ALTER TABLE ventas_raw ADD COLUMN IF NOT EXISTS lote BIGINT;

-- One row per source file, keyed by its content hash.
CREATE TABLE IF NOT EXISTS etl_files (
    file_sha VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,
    ubicacion_id INTEGER,
    fecha DATE,
    formato VARCHAR,
    chunk_rows INTEGER NOT NULL,
    started_at TIMESTAMP NOT NULL DEFAULT now()
);
-- A corrected re-send of a store-day replaces the earlier file's rows.
ALTER TABLE etl_files ADD COLUMN IF NOT EXISTS replaced_by VARCHAR;

-- One row per loaded chunk, committed in the same transaction as its rows.
CREATE TABLE IF NOT EXISTS etl_batches (
    batch_id VARCHAR PRIMARY KEY,  -- file_sha:chunk_index
    lote BIGINT NOT NULL UNIQUE,   -- short number for the batch, on each row
    file_sha VARCHAR NOT NULL,
    chunk_index INTEGER NOT NULL,
    first_line BIGINT,
    last_line BIGINT,
    rows_read BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    fence BIGINT NOT NULL,
    loaded_at TIMESTAMP NOT NULL DEFAULT now()
);
-- A file written before batches were numbered gains the column.
ALTER TABLE etl_batches ADD COLUMN IF NOT EXISTS lote BIGINT;

-- Rows refused by validation, with the reason, for someone to fix.
CREATE TABLE IF NOT EXISTS etl_quarantine (
    batch_id VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    linea BIGINT,
    raw VARCHAR,
    reason VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL DEFAULT now()
);
"""


def ensure_sales_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ETL's tables if they are missing (idempotent)."""
    con.execute(DDL)
