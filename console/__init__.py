"""The web console: server-rendered pages (Jinja2) with small ES-module scripts, served by the portal.

`install(app, pepper=…, session_hours=…)` adds everything to a portal app: the cookie-to-token bridge in
front of
`/api` and `/v1`, the pages under `/console`, their static files, and `/` redirecting to the console.
See docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import auth_pages, ops_pages, user_pages
from console.bridge import ConsoleBridge
from console.client import ApiError, http_client
from console.session import SessionCodec
from console.web import (
    HERE,
    PREFIX,
    OpsOnly,
    SignInRequired,
    error_page,
    make_templates,
    sign_in_redirect,
    translator,
)


def install(app: FastAPI, *, pepper: bytes, session_hours: float) -> None:
    """Mount the console on the portal's app: its pages call that app's API in process (`http_client`)."""
    codec = SessionCodec(pepper, int(session_hours * 3600))
    app.state.console_codec = codec
    app.state.console_templates = make_templates()
    app.state.console_http = http_client(app)
    app.add_middleware(ConsoleBridge, codec=codec)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for router in (auth_pages.router, user_pages.router, ops_pages.router):
        app.include_router(router)

    @app.get(f"{PREFIX}/{{path:path}}", include_in_schema=False)
    async def not_a_page(request: Request, path: str) -> Response:
        """Any other console path: the console's own 404 page (last: every page matched before)."""
        t, _ = translator(request)
        return error_page(request, 404, t("error.not_a_page", path=request.url.path))

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    async def _sign_in(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return sign_in_redirect(exc.next_url)

    async def _ops_only(request: Request, _: Exception) -> Response:
        return error_page(request, 403, "this page needs the platform admin (ops) role")

    async def _api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 401:
            return sign_in_redirect(request.url.path)
        return error_page(request, exc.status if exc.status < 500 else 502, exc.message, exc.fields)

    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(OpsOnly, _ops_only)
    app.add_exception_handler(ApiError, _api_error)
