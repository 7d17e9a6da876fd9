"""A traffic generator: dashboard reads and user/order writes over real HTTP.

Each client thread loops until told to stop (or its request cap), picking
dashboard reads most of the time and writes otherwise, and records every
latency, status and acknowledged write, so the demo can check afterwards
that each acknowledged write is in the file.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

LOCK_ERROR_MARKERS = ("Could not set lock", "Conflicting lock")


@dataclass
class TrafficLog:
    """Everything the clients saw; merged across threads under a lock."""

    read_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock_errors: int = 0
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: str, ms: float, response: httpx.Response | None) -> None:
        with self._lock:
            (self.read_ms if kind == "read" else self.write_ms).append(ms)
            if response is None:
                self.errors.append(f"{kind}: no response")
                return
            self.statuses[response.status_code] = (
                self.statuses.get(response.status_code, 0) + 1
            )
            text = response.text
            if any(marker in text for marker in LOCK_ERROR_MARKERS):
                self.lock_errors += 1
            if response.status_code >= 500:
                self.errors.append(f"{response.status_code} {text[:200]}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


class Traffic:
    """Client threads against `base_url`; `start()`, then `stop()`."""

    def __init__(
        self,
        base_url: str,
        *,
        clients: int,
        days: tuple[date, date],
        stores: int = 16,
        write_share: float = 0.3,
        max_requests: int = 200_000,
        think_s: float = 0.05,
        seed: int = 0,
    ):
        self.base_url = base_url
        self.clients = clients
        self.days = days
        self.stores = stores
        self.write_share = write_share
        self.max_requests = max_requests
        self.think_s = think_s
        self.log = TrafficLog()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed + i,), daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> TrafficLog:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.log

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        my_users: list[int] = []
        my_orders: list[int] = []
        budget = self.max_requests // max(1, self.clients)
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            for _ in range(budget):
                if self._stop.is_set():
                    return
                if rng.random() < self.write_share:
                    self._write(client, rng, my_users, my_orders)
                else:
                    self._read(client, rng)
                # a person (or a dashboard) pauses between requests
                self._stop.wait(rng.uniform(0, 2 * self.think_s))

    def _span(self, rng: random.Random) -> dict[str, str]:
        first, last = self.days
        width = (last - first).days
        start = first + timedelta(days=rng.randint(0, max(0, width)))
        end = min(last, start + timedelta(days=rng.randint(0, 6)))
        return {"desde": start.isoformat(), "hasta": end.isoformat()}

    def _read(self, client: httpx.Client, rng: random.Random) -> None:
        span = self._span(rng)
        choice = rng.random()
        if choice < 0.4:
            path, params = "/ventas/resumen", span
        elif choice < 0.7:
            path, params = "/ventas/top-productos", {**span, "limit": "10"}
        else:
            params = {
                **span,
                "ubicacion_id": str(rng.randint(1, self.stores)),
                "limit": "50",
            }
            path = "/ventas"
        self._call(client, "read", "GET", path, params=params)

    def _write(
        self,
        client: httpx.Client,
        rng: random.Random,
        users: list[int],
        orders: list[int],
    ) -> None:
        if not users or rng.random() < 0.25:
            body = {
                "nombre": f"Cliente {rng.randint(1, 10**6)}",
                "email": f"{uuid.uuid4().hex[:12]}@ejemplo.es",
            }
            response = self._call(client, "write", "POST", "/usuarios", json=body)
            if response is not None and response.status_code == 201:
                uid = int(response.json()["id"])
                users.append(uid)
                with self.log._lock:
                    self.log.users[uid] = body
            return
        if orders and rng.random() < 0.3:
            oid = rng.choice(orders)
            body = {"estado": rng.choice(["pagado", "enviado"])}
            response = self._call(
                client, "write", "PATCH", f"/pedidos/{oid}", json=body
            )
            if response is not None and response.status_code == 200:
                with self.log._lock:
                    self.log.orders[oid]["estado"] = body["estado"]
            return
        body = {
            "usuario_id": rng.choice(users),
            "ubicacion_id": rng.randint(1, self.stores),
            "producto_id": f"{rng.randint(10000, 99999)}{rng.choice(['', 'A', 'B'])}",
            "cantidad": rng.randint(1, 24),
        }
        response = self._call(client, "write", "POST", "/pedidos", json=body)
        if response is not None and response.status_code == 201:
            data = response.json()
            orders.append(int(data["id"]))
            with self.log._lock:
                self.log.orders[int(data["id"])] = {**body, "estado": data["estado"]}

    def _call(
        self, client: httpx.Client, kind: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.log.record(kind, (time.perf_counter() - started) * 1000, None)
            with self.log._lock:
                self.log.errors.append(f"{method} {path}: {exc!r}")
            return None
        self.log.record(kind, (time.perf_counter() - started) * 1000, response)
        return response
