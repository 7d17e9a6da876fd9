"""One router per resource; `ROUTERS` is what the application mounts."""

from __future__ import annotations

from . import admin, health, pedidos, usuarios, ventas

__all__ = ["ROUTERS"]

ROUTERS = (
    ventas.router,
    usuarios.router,
    pedidos.router,
    admin.router,
    health.router,
)
