"""The PostgreSQL reference of measure 3: the backend's writes as plain INSERTs.

No HTTP and no application in between: each writer thread holds its own
psycopg connection and runs what the backend runs per request (a user
insert; for an order, the user check and the insert, one transaction).
So the comparison tells what the HTTP + lease path costs on top of a
database that never makes writers wait for a loader.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
from psycopg import sql

from .pg import PgConnection, PgSchema
from .traffic import Burst, Samples, order_body

__all__ = ["PgWriters", "copy_active", "pg_burst", "pg_user"]

_MAX_WRITES_PER_CLIENT = 50_000


def pg_user(con: PgConnection, schema: PgSchema) -> int:
    email = f"{uuid.uuid4().hex[:16]}@bench.example"
    with con.transaction():
        row = con.execute(
            sql.SQL(
                "INSERT INTO {} (nombre, email) VALUES (%s, %s)"
                " RETURNING id, nombre, email, creado_en"
            ).format(schema.usuarios),
            ["Bench", email],
        ).fetchone()
    return int(str(row[0])) if row else 0


def pg_order(
    con: PgConnection, schema: PgSchema, rng: random.Random, user: int
) -> None:
    body = order_body(rng, user)
    with con.transaction():
        con.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(schema.usuarios), [user]
        ).fetchone()
        con.execute(
            sql.SQL(
                "INSERT INTO {} (usuario_id, ubicacion_id, producto_id, cantidad)"
                " VALUES (%s, %s, %s, %s) RETURNING *"
            ).format(schema.pedidos),
            [
                body["usuario_id"],
                body["ubicacion_id"],
                body["producto_id"],
                body["cantidad"],
            ],
        ).fetchone()


class PgWriters:
    """Writer threads alternating user and order inserts, like the HTTP ones."""

    def __init__(self, schema: PgSchema, *, writers: int, think_s: float, user: int):
        self.schema = schema
        self.think_s = think_s
        self.user = user
        self.samples = Samples()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(200 + i,), daemon=True)
            for i in range(writers)
        ]

    def start(self) -> PgWriters:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Samples:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.samples

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.schema.connect(autocommit=True) as con:
            for n in range(_MAX_WRITES_PER_CLIENT):
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                status = 201
                try:
                    if n % 2 == 0:
                        pg_user(con, self.schema)
                    else:
                        pg_order(con, self.schema, rng, self.user)
                except psycopg.Error:
                    status = 500
                self.samples.add(
                    "write", (time.perf_counter() - started) * 1000, status
                )
                self._stop.wait(rng.uniform(0, 2 * self.think_s))


def pg_burst(schema: PgSchema, n: int, pool: int, user: int) -> Burst:
    """`n` order inserts over `pool` open connections, all released at once."""
    ready = threading.Barrier(pool + 1)
    done: list[float] = []
    ok: list[int] = []

    def worker(share: int, seed: int) -> None:
        rng = random.Random(seed)
        with schema.connect(autocommit=True) as con:
            con.execute("SELECT 1")
            ready.wait()
            for _ in range(share):
                try:
                    pg_order(con, schema, rng, user)
                    ok.append(1)
                except psycopg.Error:
                    pass
            done.append(time.perf_counter())

    shares = [n // pool + (1 if i < n % pool else 0) for i in range(pool)]
    threads = [
        threading.Thread(target=worker, args=(share, i), daemon=True)
        for i, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    wall_ms = (max(done, default=started) - started) * 1000
    return Burst(n=n, wall_ms=wall_ms, ok=len(ok))


def copy_active(schema: PgSchema) -> bool:
    """Whether a COPY into this run's schema is running now."""
    with schema.connect() as con:
        row = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND datname = current_database() AND query ILIKE %s",
            [f'copy "{schema.name}".%'],
        ).fetchone()
    return bool(row and int(str(row[0])) > 0)
