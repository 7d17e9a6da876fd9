"""Prometheus metrics, one registry per application.

A registry per app (never the process-wide default) lets several apps live
in one process, as they do in the tests, without "duplicated timeseries"
errors. With several uvicorn workers each worker answers /metrics for
itself; scrape them behind the port as separate targets, or aggregate.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "RequestMetricsMiddleware"]

# Lease waits and holds go from sub-millisecond (a pooled read) to the
# length of an ETL chunk; request latency spans the same range.
# fmt: off
_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
)
# fmt: on

UNMATCHED_ROUTE = "<unmatched>"


class Metrics:
    """The instruments of one application, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "fluxion_http_request_duration_seconds",
            "HTTP request latency, by route template and status.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lease_wait_seconds = Histogram(
            "fluxion_lease_wait_seconds",
            "Time a request waited for its database lease, by mode.",
            ["mode"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lease_hold_seconds = Histogram(
            "fluxion_lease_hold_seconds",
            "Time a request held its database lease, by mode.",
            ["mode"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.busy_responses = Counter(
            "fluxion_busy_responses",
            "503 answers because no lease (or no Redis) was available in time.",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Time every HTTP request and label it with its route template.

    The template (``/pedidos/{pedido_id}``), not the raw path, keeps the
    label set small; paths that match no route share one label.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.request_seconds.labels(
                method=scope["method"], route=route, status=str(status)
            ).observe(time.perf_counter() - started)
