"""Signing in and out: the user pastes a portal token (`mf_…`); the console keeps it in its cookie.

The token is checked by asking `GET /api/me` with it, so the console accepts exactly what the API
accepts (local tokens, and OIDC access tokens pasted by hand). OIDC sign-in with a redirect to the
identity provider is future work (docs/console.md).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.client import ApiClient, ApiError
from console.session import COOKIE, ConsoleSession
from console.web import PREFIX, codec, safe_next, secure, templates_of, translator

router = APIRouter(prefix=PREFIX, include_in_schema=False)
MAX_FORM_BYTES = 16 * 1024


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on every POST; a form posted from another site must not sign anyone in or
    out (login CSRF). A client that sends no Origin (curl) is not a browser being tricked."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _login_page(request: Request, next_url: str, error: str | None = None, status: int = 200) -> Response:
    t, cookies = translator(request)
    context = {
        "t": t,
        "lang": t.lang,
        "next": next_url,
        "error": error,
        "path": request.url.path,
        "query": "",
    }
    response = templates_of(request).TemplateResponse(request, "login.html", context, status_code=status)
    for name, value in cookies.items():
        response.set_cookie(name, value, max_age=365 * 24 * 3600, samesite="lax", path="/")
    return secure(response)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request, safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    t, _ = translator(request)
    if not _same_origin(request):
        return _login_page(request, f"{PREFIX}/", t("login.cross_site"), 403)
    raw = await request.body()
    form = parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    next_url = safe_next((form.get("next") or [""])[0])
    if not token:
        return _login_page(request, next_url, t("login.empty"), 422)
    try:
        me = await ApiClient(request.app.state.console_http, token).get("/api/me")
    except ApiError as exc:
        return _login_page(request, next_url, exc.message, 401 if exc.status == 401 else exc.status)
    cookie = codec(request).seal(ConsoleSession(token=token, username=str(me["username"])))
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=codec(request).max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    if not _same_origin(request):
        return Response("cross-site sign-out refused", status_code=403)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
