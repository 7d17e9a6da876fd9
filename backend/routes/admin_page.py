"""The operator page, ``GET /admin``: one HTML file, no build step, no CDN.

It shows what ``GET /admin/locks`` returns (holders, queue, both fences,
counters) and draws the last minutes of turns from the history, polling
that endpoint every 2 s while the tab is visible.

Authentication: the page shell is public and holds no data; the data comes
only from ``/admin/locks``, with the same bearer token as the API. The
operator pastes the token into the page (or opens ``/admin#token=...``:
a fragment never reaches the server, its logs or a Referer header, and the
page removes it from the address bar at once). The script keeps it in
``sessionStorage``, so it lives only as long as the tab, and sends it only
as an ``Authorization`` header. This was chosen over a login cookie
because nothing is sent by the browser on its own: there is no session to
forge from another site (no CSRF), no server-side state, and one check for
page and API. The risk it keeps is script injection reading the token, so
the page builds its DOM with ``textContent`` only and is served with a
Content-Security-Policy that allows just its own nonce-tagged script and
style and requests to this origin.

With no admin token configured the page answers 403 and says how to enable
it, as the API does.
"""

from __future__ import annotations

import functools
import secrets
from importlib import resources

from fastapi import APIRouter, status
from fastapi.responses import HTMLResponse

from ..deps import SettingsDep

__all__ = ["router"]

router = APIRouter(tags=["admin"])

PAGE = "admin.html"
DISABLED_PAGE = "admin_disabled.html"
NONCE_MARK = "{{nonce}}"


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def ver_pagina_admin(settings: SettingsDep) -> HTMLResponse:
    """The lock page; it shows data only once the operator gives the token."""
    if settings.admin_token is None:
        return _page(DISABLED_PAGE, status.HTTP_403_FORBIDDEN)
    return _page(PAGE, status.HTTP_200_OK)


def _page(name: str, status_code: int) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _template(name).replace(NONCE_MARK, nonce)
    return HTMLResponse(html, status_code=status_code, headers=_headers(nonce))


@functools.cache
def _template(name: str) -> str:
    return resources.files("backend").joinpath("templates", name).read_text("utf-8")


def _headers(nonce: str) -> dict[str, str]:
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
