"""One error shape for the whole API, and one table from exceptions to HTTP statuses.

{"error": {"code": "not_found", "message": "...", "fields": [{"field": "...", "message": "..."}],
           "request_id": "..."}}

Messages are answered in the caller's language (`Accept-Language`: English or Chinese), see
portal/messages.py.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SkipValidation
from sqlalchemy import exc as db
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from fleet.errors import IssuesError
from portal.context import current_request_id
from portal.messages import Message, language, msg, translate, validation_message

log = logging.getLogger("modelfleet.portal")
RETRY_AFTER_SECONDS = 1


class FieldError(BaseModel):
    field: str
    # Not validated: a `Message` keeps its template (a str subclass would be copied to a plain str).
    message: Annotated[str, SkipValidation]


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PortalError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class Invalid(PortalError):
    status = 422
    code = "invalid"

    @classmethod
    def field(cls, field: str, message: str) -> Invalid:
        summary = msg("{field}: {message}", field=field, message=message)
        return cls(summary, [FieldError(field=field, message=message)])


class Unauthorized(PortalError):
    status = 401
    code = "unauthorized"


class Forbidden(PortalError):
    status = 403
    code = "forbidden"


class NotFound(PortalError):
    status = 404
    code = "not_found"


class Conflict(PortalError):
    status = 409
    code = "conflict"


class Unavailable(PortalError):
    status = 503
    code = "unavailable"


class Unsupported(PortalError):
    """What this installation cannot do (yet): e.g. the logs of a runtime without a log source."""

    status = 501
    code = "not_implemented"


STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    431: "headers_too_large",
    501: "not_implemented",
    503: "unavailable",
}

# Documented on every route so the OpenAPI document says what errors look like.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": code.replace("_", " ")}
    for status, code in STATUS_CODES.items()
    if status in (400, 401, 403, 404, 409, 422)
}


def _localize(text: str, lang: str) -> str:
    """`text` in `lang`; the messages a message names (a field's inside a summary) are translated too."""
    if lang == "en":
        return str(text)
    if isinstance(text, Message) and any(isinstance(v, Message) for v in text.params.values()):
        params = {k: _localize(v, lang) if isinstance(v, Message) else v for k, v in text.params.items()}
        translated = translate(Message(text.template, **params), lang)
        return translated
    return translate(text, lang)


def _body(
    request: Request, status: int, code: str, message: str, fields: list[FieldError] | None = None
) -> JSONResponse:
    lang = language(request.headers.get("accept-language"))
    error = ErrorBody(
        code=code,
        message=_localize(message, lang),
        fields=[FieldError(field=f.field, message=_localize(f.message, lang)) for f in fields or []],
        request_id=current_request_id(),
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(
        ErrorResponse(error=error).model_dump(mode="json"), status_code=status, headers=headers
    )


def refusal_body(status: int, message: str, field: str | None) -> bytes:
    """A refusal of the bounds middleware (store/bounds.py: 400, 413, 431) in the portal's shape."""
    fields = [FieldError(field=field, message=message)] if field else []
    code = STATUS_CODES.get(status, "bad_request")
    error = ErrorBody(code=code, message=message, fields=fields, request_id=current_request_id())
    return ErrorResponse(error=error).model_dump_json().encode()


def database_unreachable(exc: BaseException) -> bool:
    """The database went away (connection terminated, server restarting, pool exhausted): the
    request did nothing durable, and the same request may well succeed a moment later."""
    if isinstance(exc, db.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, db.OperationalError | db.TimeoutError)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _empty_body(receive: Receive) -> Receive:
    """The request again, for a retried read: its (empty) body, then the client's own messages."""
    given = False

    async def replay() -> AsgiMessage:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return replay


class ServerErrors:
    """The last word on a request that raised: a 503 with Retry-After when the database connection
    was lost (a read is retried once first: it changed nothing), else a 500. Both in the error shape,
    with the request id in the body and the header — which is why this sits inside the request id
    middleware, not in Starlette's outermost error handler (which runs after the id is gone).

    A 500 is raised on after it is answered, so the server logs the traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: AsgiMessage) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        attempts = 2 if scope.get("method") in SAFE_METHODS else 1
        for attempt in range(1, attempts + 1):
            try:
                await self.app(scope, receive if attempt == 1 else _empty_body(receive), watched)
                return
            except Exception as exc:
                if started:
                    raise
                if database_unreachable(exc):
                    log.warning("portal: database unreachable (%s, attempt %d)", type(exc).__name__, attempt)
                    if attempt < attempts:
                        continue
                    response = _body(
                        Request(scope), 503, "unavailable", "the database is unreachable; try again shortly"
                    )
                    await response(scope, receive, send)
                    return
                if isinstance(exc, db.DataError):  # a value no validation caught (the model's gap)
                    log.warning("portal: the database refused a value: %s", exc.orig)
                    response = _body(
                        Request(scope), 422, "invalid", "a value is outside what the database can store"
                    )
                    await response(scope, receive, send)
                    return
                response = _body(
                    Request(scope),
                    500,
                    "internal",
                    f"internal error ({type(exc).__name__}); see the server log",
                )
                await response(scope, receive, send)
                raise


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    from portal.refusals import audit_refusal  # imports the audit, which imports this module's users

    @app.exception_handler(PortalError)
    async def _portal(request: Request, exc: PortalError) -> JSONResponse:
        await audit_refusal(request, exc.status, exc.code, exc.message, exc.fields)
        return _body(request, exc.status, exc.code, exc.message, exc.fields)

    @app.exception_handler(IssuesError)
    async def _issues(request: Request, exc: IssuesError) -> JSONResponse:
        fields = [FieldError(field=i.path, message=i.message) for i in exc.issues]
        await audit_refusal(request, 422, exc.kind, str(exc), fields)
        return _body(request, 422, exc.kind, str(exc), fields)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        lang = language(request.headers.get("accept-language"))
        fields = [
            FieldError(field=_location(e.get("loc", ())), message=validation_message(e, lang))
            for e in exc.errors()
        ]
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:3])
        await audit_refusal(request, 422, "invalid", summary or "invalid request", fields)
        return _body(request, 422, "invalid", summary or translate("invalid request", lang), fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _body(request, exc.status_code, STATUS_CODES.get(exc.status_code, "error"), str(exc.detail))

    # Unexpected exceptions: `ServerErrors`, a middleware inside the request id's.
