"""What every console page shares: who is signed in, their workspaces, the language, and rendering.

A page handler calls `await page(request)` for a `Ctx` (or is redirected to the sign-in page), reads
what it shows through `ctx.api` (the portal's JSON API, in process) and returns `ctx.render(...)`.
An `ApiError` a handler does not catch becomes an error page carrying the API's own message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import charts, markdown
from console.client import ApiClient, ApiError, all_of
from console.i18n import LANGUAGES, Translator, catalog, choose
from console.session import COOKIE, LANG_COOKIE, WORKSPACE_COOKIE, ConsoleSession, SessionCodec
from store.vocabulary import badge

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
YEAR = 365 * 24 * 3600
# Scripts only from our own files (no inline script, no CDN); inline style attributes are used by charts;
# media from blobs the page made itself (the playground plays the speech it received).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
    "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


class SignInRequired(Exception):
    """No valid session: the handler answers with a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class OpsOnly(Exception):
    """An ops page asked for by someone without the platform admin role."""


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _dt(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not value:
        return ""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return parsed.strftime(fmt)


def _num(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _money(value: Any) -> str:
    """An exact decimal string shown without its trailing zeros (0.000390500 → 0.0003905)."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(
        dt=_dt, num=_num, money=_money, compact=charts.compact, markdown=markdown.render, pretty=_pretty
    )
    env.globals.update(base=PREFIX, static_version=_static_version(), languages=LANGUAGES, badge_of=badge)
    env.trim_blocks = True
    env.lstrip_blocks = True
    return templates


@dataclass
class Ctx:
    request: Request
    templates: Jinja2Templates
    api: ApiClient
    session: ConsoleSession
    me: dict[str, Any]
    workspaces: list[dict[str, Any]]
    ws: str | None
    t: Translator
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def is_ops(self) -> bool:
        return bool(self.me.get("is_platform_admin"))

    @property
    def role(self) -> str | None:
        for w in self.workspaces:
            if w["slug"] == self.ws:
                return str(w.get("role") or "") or None
        return None

    def require_ops(self) -> None:
        if not self.is_ops:
            raise OpsOnly()

    def render(self, template_name: str, status_code: int = 200, **data: Any) -> Response:
        catalog_json = json.dumps(catalog(self.t.lang), ensure_ascii=False).replace("</", "<\\/")
        context = {
            "t": self.t,
            "lang": self.t.lang,
            "me": self.me,
            "ws": self.ws,
            "role": self.role,
            "workspaces": self.workspaces,
            "is_ops": self.is_ops,
            "path": self.request.url.path,
            "query": self.request.url.query,
            "i18n_json": Markup(catalog_json),  # JSON with "</" escaped, in a JSON script tag
            **data,
        }
        response = self.templates.TemplateResponse(
            self.request, template_name, context, status_code=status_code
        )
        for name, value in self.cookies.items():
            response.set_cookie(name, value, max_age=YEAR, httponly=False, samesite="lax", path="/")
        return secure(response)


def codec(request: Request) -> SessionCodec:
    value: SessionCodec = request.app.state.console_codec
    return value


def templates_of(request: Request) -> Jinja2Templates:
    value: Jinja2Templates = request.app.state.console_templates
    return value


def translator(request: Request) -> tuple[Translator, dict[str, str]]:
    query = request.query_params.get("lang")
    lang = choose(query, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    cookies = {LANG_COOKIE: lang} if query in LANGUAGES and query != request.cookies.get(LANG_COOKIE) else {}
    return Translator(lang), cookies


def next_of(request: Request) -> str:
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


async def page(request: Request) -> Ctx:
    session = codec(request).open(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired(next_of(request))
    t, cookies = translator(request)
    api = ApiClient(request.app.state.console_http, session.token, t.lang)
    try:
        me, workspaces = await all_of(api.get("/api/me"), api.get("/api/workspaces", page_size=500))
    except ApiError as exc:
        if exc.status == 401:
            raise SignInRequired(next_of(request)) from exc
        raise
    slugs = [w["slug"] for w in workspaces["items"]]
    wanted = request.query_params.get("ws") or request.cookies.get(WORKSPACE_COOKIE)
    ws = wanted if wanted in slugs else (slugs[0] if slugs else None)
    if ws and ws != request.cookies.get(WORKSPACE_COOKIE):
        cookies[WORKSPACE_COOKIE] = ws
    return Ctx(request, templates_of(request), api, session, me, workspaces["items"], ws, t, cookies)


def sign_in_redirect(next_url: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/login?next={quote(next_url, safe='')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): an open redirect would help phishing."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


def error_page(
    request: Request, status: int, message: str, fields: list[dict[str, str]] | None = None
) -> Response:
    t, _ = translator(request)
    session = codec(request).open(request.cookies.get(COOKIE))
    context = {
        "t": t,
        "lang": t.lang,
        "me": {"username": session.username if session else ""},
        "ws": None,
        "role": None,
        "workspaces": [],
        "is_ops": False,
        "path": request.url.path,
        "query": request.url.query,
        "i18n_json": Markup(json.dumps(catalog(t.lang), ensure_ascii=False).replace("</", "<\\/")),
        "status": status,
        "message": message,
        "fields": fields or [],
    }
    return secure(templates_of(request).TemplateResponse(request, "error.html", context, status_code=status))
