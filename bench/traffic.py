"""HTTP load for measure 3: dashboard readers, user and order writers, a burst.

Readers cycle through the three dashboard routes; writers alternate
`POST /usuarios` and `POST /pedidos`. Every client is a real `httpx`
client against the uvicorn server on 127.0.0.1, closed-loop with a short
pause between requests, and bounded in time (`stop`) and in count. A
latency is recorded for every request, whatever its status; non-2xx
answers are also counted as errors.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Burst", "HttpLoad", "Samples", "burst", "lease_waits", "new_user"]

_MAX_REQUESTS_PER_CLIENT = 50_000
_TIMEOUT_S = 30.0
_STORES = 16


@dataclass
class Samples:
    """Latencies (ms) and outcomes of one phase of traffic."""

    read_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, ms: float, status: int) -> None:
        with self.lock:
            (self.read_ms if kind == "read" else self.write_ms).append(ms)
            self.statuses[status] += 1
            if not 200 <= status < 300:
                self.errors += 1


def new_user(client: httpx.Client) -> int:
    """Register a user with a fresh email; returns its id."""
    email = f"{uuid.uuid4().hex[:16]}@bench.example"
    response = client.post("/usuarios", json={"nombre": "Bench", "email": email})
    response.raise_for_status()
    return int(response.json()["id"])


class HttpLoad:
    """Reader and writer threads; `start()`, then `stop()` for the samples."""

    def __init__(
        self,
        base_url: str,
        *,
        readers: int,
        writers: int,
        think_s: float,
        days: list[date],
        usuario_id: int,
        seed: int = 0,
    ):
        self.base_url = base_url
        self.think_s = think_s
        self.days = days
        self.usuario_id = usuario_id
        self.samples = Samples()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_loop, args=(seed + i,), daemon=True)
            for i in range(readers)
        ] + [
            threading.Thread(
                target=self._write_loop, args=(seed + 100 + i,), daemon=True
            )
            for i in range(writers)
        ]

    def start(self) -> HttpLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Samples:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=_TIMEOUT_S + 5)
        return self.samples

    def _call(
        self, client: httpx.Client, kind: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError:
            self.samples.add(kind, (time.perf_counter() - started) * 1000, 0)
            return None
        self.samples.add(
            kind, (time.perf_counter() - started) * 1000, response.status_code
        )
        return response

    def _read_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        first, last = self.days[0].isoformat(), self.days[-1].isoformat()
        routes = itertools.cycle(("resumen", "top", "ventas"))
        with httpx.Client(base_url=self.base_url, timeout=_TIMEOUT_S) as client:
            for route in itertools.islice(routes, _MAX_REQUESTS_PER_CLIENT):
                if self._stop.is_set():
                    return
                day = rng.choice(self.days).isoformat()
                if route == "resumen":
                    params = {"desde": first, "hasta": last}
                    self._call(client, "read", "GET", "/ventas/resumen", params=params)
                elif route == "top":
                    params = {"desde": day, "hasta": day, "limit": "10"}
                    self._call(
                        client, "read", "GET", "/ventas/top-productos", params=params
                    )
                else:
                    params = {
                        "desde": day,
                        "hasta": day,
                        "limit": "50",
                        "ubicacion_id": str(rng.randint(1, _STORES)),
                    }
                    self._call(client, "read", "GET", "/ventas", params=params)
                self._stop.wait(rng.uniform(0, 2 * self.think_s))

    def _write_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.base_url, timeout=_TIMEOUT_S) as client:
            for n in range(_MAX_REQUESTS_PER_CLIENT):
                if self._stop.is_set():
                    return
                if n % 2 == 0:
                    email = f"{uuid.uuid4().hex[:16]}@bench.example"
                    self._call(
                        client,
                        "write",
                        "POST",
                        "/usuarios",
                        json={"nombre": "Bench", "email": email},
                    )
                else:
                    self._call(
                        client,
                        "write",
                        "POST",
                        "/pedidos",
                        json=order_body(rng, self.usuario_id),
                    )
                self._stop.wait(rng.uniform(0, 2 * self.think_s))


def order_body(rng: random.Random, usuario_id: int) -> dict[str, Any]:
    return {
        "usuario_id": usuario_id,
        "ubicacion_id": rng.randint(1, _STORES),
        "producto_id": f"{rng.randint(10_000, 99_999)}A",
        "cantidad": rng.randint(1, 24),
    }


@dataclass
class Burst:
    """`n` concurrent order inserts: wall time from first send to last answer."""

    n: int
    wall_ms: float
    ok: int


def burst(base_url: str, n: int, usuario_id: int) -> Burst:
    """Open `n` connections (GET /health), then send `n` POST /pedidos at once."""
    return asyncio.run(_burst(base_url, n, usuario_id))


async def _burst(base_url: str, n: int, usuario_id: int) -> Burst:
    rng = random.Random(n)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=_TIMEOUT_S, limits=limits
    ) as client:
        await asyncio.gather(*(client.get("/health") for _ in range(n)))
        bodies = [order_body(rng, usuario_id) for _ in range(n)]
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(client.post("/pedidos", json=body) for body in bodies),
            return_exceptions=True,
        )
        wall_ms = (time.perf_counter() - started) * 1000
    ok = sum(isinstance(a, httpx.Response) and a.status_code == 201 for a in answers)
    return Burst(n=n, wall_ms=wall_ms, ok=ok)


def lease_waits(base_url: str) -> dict[str, tuple[float, float]]:
    """The backend's `fluxion_lease_wait_seconds` (sum, count) per lease mode."""
    text = httpx.get(f"{base_url}/metrics", timeout=_TIMEOUT_S).text
    waits: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "fluxion_lease_wait_seconds":
            continue
        for sample in family.samples:
            mode = sample.labels.get("mode", "")
            pair = waits.setdefault(mode, [0.0, 0.0])
            if sample.name.endswith("_sum"):
                pair[0] = sample.value
            elif sample.name.endswith("_count"):
                pair[1] = sample.value
    return {mode: (pair[0], pair[1]) for mode, pair in waits.items()}
