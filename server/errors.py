"""Typed errors and the one table that maps them to HTTP status + OpenAI error body.

Handlers raise these; ``install_error_handlers`` turns them (and FastAPI's own
validation / routing errors) into ``{"error": {"message", "type", "param", "code"}}``
with the right status, so no client ever sees a traceback or a 500 for bad input.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from ..adapters import errors as reg
from .engine.interface import AdapterLoadError, EngineError, EngineRequestError

log = logging.getLogger(__name__)


class HotswapError(Exception):
    """Base of every error that reaches a client. Subclasses fix status, type and code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    #: Extra response headers (Retry-After on 503s that a retry can fix).
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(HotswapError):
    status, type, code = 400, "invalid_request_error", None


class UnsupportedParameter(HotswapError):
    status, type, code = 400, "invalid_request_error", "unsupported_parameter"


class ContextLengthExceeded(HotswapError):
    status, type, code = 400, "invalid_request_error", "context_length_exceeded"


class ModelNotFound(HotswapError):
    status, type, code = 404, "invalid_request_error", "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist.", param="model")


class Unauthenticated(HotswapError):
    status, type = 401, "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.headers = {"WWW-Authenticate": "Bearer"}


class MissingApiKey(Unauthenticated):
    code = "missing_api_key"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class InsufficientScope(HotswapError):
    # A valid key that may not do this (an inference key on an admin route).
    status, type, code = 403, "permission_error", "insufficient_scope"


class NameNotAllowed(HotswapError):
    # The key policy does not let this key manage adapters under this name.
    status, type, code = 403, "permission_error", "name_not_allowed"


class AdminPortOnly(HotswapError):
    # An admin route asked on the public port while --admin-port is set.
    status, type, code = 403, "permission_error", "admin_port_only"


class CrossSiteRefused(HotswapError):
    # A browser said the request comes from another site (Sec-Fetch-Site, Origin).
    status, type, code = 403, "permission_error", "cross_site_refused"


class UnsupportedMediaType(HotswapError):
    # Browsers send text/plain or form types cross-site without a preflight; we take
    # neither, so a web page can not post to this server.
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class HostNotAllowed(HotswapError):
    # A Host header outside --allowed-host: DNS rebinding, or a misrouted request.
    status, type, code = 421, "invalid_request_error", "host_not_allowed"


class RouteNotFound(HotswapError):
    status, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(HotswapError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class PayloadTooLarge(HotswapError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class RequestTimeout(HotswapError):
    # A request body that stopped arriving (slow-loris): its connection is let go.
    status, type, code = 408, "invalid_request_error", "request_timeout"


class TooManyRequests(HotswapError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class ClientDisconnected(HotswapError):
    # Nginx's 499: nobody reads this answer; it exists so logs and metrics can say why
    # the request ended.
    status, type, code = 499, "invalid_request_error", "client_closed_request"


class NotReady(HotswapError):
    status, type, code = 503, "service_unavailable", "not_ready"


class EngineUnavailable(HotswapError):
    status, type, code = 503, "service_unavailable", "engine_unavailable"


class Draining(HotswapError):
    # SIGTERM received: in-flight requests finish, new ones go to another replica.
    status, type, code = 503, "service_unavailable", "draining"

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another replica")
        self.headers = {"Retry-After": "1", "Connection": "close"}


class AdapterUnloadable(HotswapError):
    # The adapter passed registration but the engine could not load it now.
    status, type, code = 422, "invalid_request_error", "adapter_load_failed"


class AdapterExists(HotswapError):
    status, type, code = 400, "invalid_request_error", "adapter_exists"


class RegistryError(HotswapError):
    """An ``adapters.errors.AdapterError`` with the status the table below gives it."""

    def __init__(self, exc: reg.AdapterError, status: int) -> None:
        # A store failure's own message may name server paths: the log has it, the
        # client gets the code and a pointer.
        message = ("the adapter store failed (see the server log)" if status == 500
                   else exc.message)
        super().__init__(message, param=exc.param)
        self.status = status
        self.code = exc.code
        if isinstance(exc, reg.StoreBusy | reg.TooManyUploads):
            self.headers = {"Retry-After": str(STORE_BUSY_RETRY_AFTER_S)}
        if status == 503:
            self.type = "service_unavailable"
        elif status >= 500:
            self.type = "server_error"
        elif status == 403:
            self.type = "permission_error"
        elif status == 429:
            self.type = "rate_limit_error"
        else:
            self.type = "invalid_request_error"


#: Seconds a client should wait after store_busy: writers hold the lock for a short
#: publish step only, so a second is plenty.
STORE_BUSY_RETRY_AFTER_S = 1

#: Registry errors -> HTTP status, most specific class first (the first isinstance match
#: wins). 400: the request names or carries something malformed; 404: nothing by that
#: name; 413: over a size cap; 422: a well-formed adapter this server refuses; 403: a hub
#: repo or bucket this server may not pull (or the hub / object storage refused us), or a
#: server-side path outside every --import-root; 409: an S3 object changed mid-pull;
#: 502: the hub or object storage failed us; 503: retry later (store lock), or nothing
#: can be admitted until the operator fixes the base model's config.
REGISTRY_STATUS: tuple[tuple[type[reg.AdapterError], int], ...] = (
    (reg.InvalidName, 400),
    (reg.InvalidHubRepo, 400),
    (reg.HubRepoNotAllowed, 403),
    (reg.HubAccessDenied, 403),
    (reg.HubRepoNotFound, 404),
    (reg.HubUnavailable, 502),
    (reg.InvalidS3Url, 400),
    (reg.S3NotAllowed, 403),
    (reg.S3AccessDenied, 403),
    (reg.S3NotFound, 404),
    (reg.S3ObjectChanged, 409),
    (reg.S3Unavailable, 502),
    (reg.InvalidArchive, 400),
    (reg.UnsafePath, 400),
    (reg.SourceNotFound, 400),
    (reg.PathNotAllowed, 403),
    (reg.AdmissionUnavailable, 503),
    (reg.UploadIncomplete, 408),
    (reg.TooManyUploads, 429),
    (reg.StoreFull, 507),
    (reg.AdapterNotFound, 404),
    (reg.VersionNotFound, 404),
    (reg.TooLarge, 413),
    (reg.AdmissionError, 422),
    (reg.StoreBusy, 503),
    (reg.NameTaken, 409),
    (reg.StoreCorrupt, 500),
    (reg.AdapterError, 500),
)


def registry_status(exc: reg.AdapterError) -> int:
    return next(status for cls, status in REGISTRY_STATUS if isinstance(exc, cls))


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def to_body(exc: HotswapError) -> dict[str, Any]:
    return error_body(exc.message, exc.type, param=exc.param, code=exc.code)


async def send_error(send: Send, err: HotswapError) -> None:
    """Answer ``err`` from an ASGI middleware (before any route runs)."""
    body = json.dumps(to_body(err)).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (err.headers or {}).items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def classify(exc: BaseException) -> HotswapError:
    """The client-facing error of any exception (unknown ones: an opaque 500); logs
    nothing, so metrics may ask too."""
    if isinstance(exc, HotswapError):
        return exc
    if isinstance(exc, reg.AdapterError):
        return RegistryError(exc, registry_status(exc))
    if isinstance(exc, EngineRequestError):
        return InvalidRequest(str(exc))
    if isinstance(exc, AdapterLoadError):
        return AdapterUnloadable(str(exc))
    if isinstance(exc, EngineError):
        return EngineUnavailable(f"engine error: {exc}")
    return HotswapError("internal server error")


def from_exception(exc: BaseException) -> HotswapError:
    """:func:`classify`, logged: server-side failures with their cause, unknown ones
    with a traceback."""
    err = classify(exc)
    if isinstance(exc, reg.AdapterError):
        if err.status == 502:
            log.warning("upstream failure: %s", exc)  # the hub's fault: no traceback
        elif err.status == 507:
            log.error("adapter store full: %s (%s)", exc, exc.__cause__)  # no traceback
        elif err.status >= 500:
            log.error("registry error", exc_info=exc)
    elif not isinstance(exc, HotswapError | EngineError | EngineRequestError):
        log.error("unhandled error", exc_info=exc)
    return err


#: Type names pydantic puts in an error's location for the member of a union it tried.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    # A union reports one error per member; "not a string" for a value that was meant to
    # be the list is noise next to the list's own complaint (too many items).
    unknown = [".".join(str(p) for p in e.get("loc", ())
                        if p != "body" and not _is_union_member(str(p)))
               for e in errors if e.get("type") == "extra_forbidden"]
    if unknown:
        # Named all at once: a client learns every field this server does not take
        # from one answer (a silently ignored field would change nothing in the output).
        names = ", ".join(repr(u) for u in unknown)
        message = (f"unrecognized request field{'s' if len(unknown) > 1 else ''} {names}: "
                   "this server does not support it" + ("" if len(unknown) == 1 else "m"))
        # A plain field's own error too, so one answer tells both (union members' errors
        # are left out: one of them is the member that was meant).
        other = next((e for e in errors if e.get("type") != "extra_forbidden"
                      and not any(_is_union_member(str(p)) for p in e.get("loc", ()))), None)
        if other is not None:
            where = ".".join(str(p) for p in other.get("loc", ()) if p != "body")
            message += f"; also {where}: {other.get('msg', 'invalid value')}"
        return message, unknown[0]
    specific = [e for e in errors if not str(e.get("type", "")).endswith("_type")]
    first = (specific or errors)[0]
    loc = [str(p) for p in first.get("loc", ())
           if p != "body" and not _is_union_member(str(p))]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    return (f"{param}: {msg}" if param else msg), param


def _is_union_member(part: str) -> bool:
    # A model in a union is tagged by its class name (field names here are snake_case).
    return (part in _UNION_MEMBERS or "[" in part or part[:1].isupper()
            or part.startswith(("constrained-", "function-")))


def install_error_handlers(app: FastAPI) -> None:
    async def on_hotswap(_: Request, exc: Exception) -> JSONResponse:
        err = from_exception(exc)
        return JSONResponse(to_body(err), status_code=err.status, headers=err.headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        # OpenAI answers 400 for schema violations; FastAPI's default is 422.
        body = error_body(message, "invalid_request_error", param=param)
        return JSONResponse(body, status_code=400)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err: HotswapError
        if exc.status_code == 404:
            err = RouteNotFound(str(exc.detail))
        elif exc.status_code == 405:
            err = MethodNotAllowed(str(exc.detail))
        else:
            err = InvalidRequest(str(exc.detail))
            err.status = exc.status_code
        # Starlette's own headers, e.g. the Allow of a 405 (RFC 9110 requires it).
        return JSONResponse(to_body(err), status_code=err.status, headers=exc.headers)

    app.add_exception_handler(HotswapError, on_hotswap)
    app.add_exception_handler(EngineError, on_hotswap)
    app.add_exception_handler(EngineRequestError, on_hotswap)
    app.add_exception_handler(reg.AdapterError, on_hotswap)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_hotswap)
