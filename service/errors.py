"""OpenAI-shaped errors: every failure a caller sees is {"error": {message, type, param, code}}.

Callers' mistakes are 4xx with a message saying what to change; anything unexpected is
logged here with its traceback and reaches the caller as a plain 500 message.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bioinstruct.registry import Conflict, NotFound, RegistryError, RegistryUnavailable

log = logging.getLogger("bioinstruct.service")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: ErrorDetail


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}


def error_response(status: int, message: str, *, param=None, code=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, first_param = [], None
    body = getattr(exc, "body", None)
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        # A tagged union (/compare's `route`) puts the tag first in loc: the caller's field is after it.
        if loc and isinstance(body, dict) and loc[0] == body.get("route"):
            loc = loc[1:]
        param = ".".join(loc) or None
        first_param = first_param or param
        msg = err.get("msg", "invalid value")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            parts.append(f"the request body is not valid JSON ({ctx}); send a JSON object")
            continue
        if err.get("type") == "union_tag_not_found":
            field = err.get("ctx", {}).get("discriminator", "").strip("'")
            parts.append(f"'{field}' is required")
            first_param = first_param or field
            continue
        if err.get("type") == "missing":
            parts.append(f"'{param}' is required")
        elif param:
            parts.append(f"'{param}': {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts) or "invalid request", first_param


def registry_status(exc: RegistryError) -> int:
    """The HTTP status of a refused registry operation: the registry knows nothing of HTTP."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, RegistryUnavailable):
        return 503
    return 400


def allowed_methods(app: FastAPI, scope: dict) -> set[str]:
    """Every method some route serves on this request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)

    @app.exception_handler(RegistryError)
    async def _registry_error(_: Request, exc: RegistryError):
        return error_response(registry_status(exc), exc.message, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        message, param = _describe_validation(exc)
        return error_response(400, message, param=param, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route; see /docs for the API"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route that matched the path only;
            # a path served by several routes (GET and POST /admin/adapters) allows them all.
            allowed = sorted(allowed_methods(request.app, request.scope))
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            message = f"method not allowed on this route ({request.method}); allowed: {', '.join(allowed)}"
        return error_response(exc.status_code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the gateway logged the details", code="internal_error")


# Status codes each kind of route may answer, declared in the OpenAPI schema.
def responses(*codes: int) -> dict[int | str, dict]:
    text = {
        400: "Invalid request: the message says what to change",
        401: "Missing or invalid bearer token",
        403: "This key may not use the requested adapter",
        404: "Unknown adapter, alias or version",
        409: "Conflict with the registry's state",
        413: "Request body too large",
        429: "Too many requests in flight; retry after Retry-After seconds",
        499: "Client closed the request",
        503: "Engine not ready or restarting; retry",
        504: "Engine did not answer in time",
    }
    return {c: {"model": ErrorResponse, "description": text.get(c, "Error")} for c in codes}
