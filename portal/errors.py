"""One error shape for the whole API, and one table from exceptions to HTTP statuses.

{"error": {"code": "not_found", "message": "...", "fields": [{"field": "...", "message": "..."}],
           "request_id": "..."}}

Messages are answered in the caller's language (`Accept-Language`: English or Chinese), see
portal/messages.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SkipValidation
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.errors import IssuesError
from portal.context import current_request_id
from portal.messages import Message, language, msg, translate, validation_message


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
    501: "not_implemented",
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
    return JSONResponse(
        ErrorResponse(error=error).model_dump(mode="json"), status_code=status, headers=headers
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(PortalError)
    async def _portal(request: Request, exc: PortalError) -> JSONResponse:
        return _body(request, exc.status, exc.code, exc.message, exc.fields)

    @app.exception_handler(IssuesError)
    async def _issues(request: Request, exc: IssuesError) -> JSONResponse:
        fields = [FieldError(field=i.path, message=i.message) for i in exc.issues]
        return _body(request, 422, exc.kind, str(exc), fields)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        lang = language(request.headers.get("accept-language"))
        fields = [
            FieldError(field=_location(e.get("loc", ())), message=validation_message(e, lang))
            for e in exc.errors()
        ]
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:3])
        return _body(request, 422, "invalid", summary or translate("invalid request", lang), fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _body(request, exc.status_code, STATUS_CODES.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # logged by the server
        text = msg("internal error ({kind}); see the server log", kind=type(exc).__name__)
        return _body(request, 500, "internal", text)
