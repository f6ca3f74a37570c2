"""Browser and DNS-rebinding defences, before any route runs (a pure ASGI middleware).

- **Host**: with an allowlist (``--allowed-host``; by default the loopback names when
  bound to loopback), a request whose ``Host`` header names anything else is refused
  with 421: a web page that rebinds its own domain to 127.0.0.1 still sends its domain.
- **Content type**: a request with a body must say what it is — ``application/json``
  for JSON routes, an archive type for ``POST /v1/adapters`` — or get 415. Browsers send
  only ``text/plain`` and form types cross-site without a CORS preflight, and this server
  answers no preflight (no CORS headers at all), so a page can not post to it.
- **Cross-site requests**: a page may still send a body-less ``POST`` (``fetch`` with
  ``mode: "no-cors"``), e.g. to unload an adapter. Browsers label such requests
  (``Sec-Fetch-Site: cross-site``, an ``Origin`` of the page's site): a state-changing
  request so labelled, or whose ``Origin`` names a host outside the allowlist, gets 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import (
    CrossSiteRefused,
    HostNotAllowed,
    HotswapError,
    InvalidRequest,
    UnsupportedMediaType,
    send_error,
)

#: What an archive upload may be labelled.
ARCHIVE_TYPES = frozenset({
    "application/octet-stream", "application/x-tar", "application/gzip",
    "application/x-gzip", "application/x-compressed-tar", "application/zip",
    "application/x-zip-compressed",
})
JSON_TYPES = frozenset({"application/json"})
UPLOAD_PATH = "/v1/adapters"
#: Methods that change nothing (the cross-site check leaves them alone).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self._app = app
        #: Empty: any host (a server bound to a routable address, keys required).
        self._hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        repeated = False
        for k, v in scope["headers"]:
            key = k.decode("latin-1").lower()
            repeated = repeated or (key == "host" and key in headers)
            headers[key] = v.decode("latin-1")
        refusal = (
            InvalidRequest("more than one Host header") if repeated
            else self._check_host(headers.get("host", ""))
            or self._check_origin(scope, headers) or _check_type(scope, headers)
        )
        if refusal is None:
            await self._app(scope, receive, send)
            return
        await send_error(send, refusal)

    def _check_origin(self, scope: Scope, headers: dict[str, str]) -> HotswapError | None:
        if scope["method"] in SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site", "") == "cross-site":
            return CrossSiteRefused("cross-site requests may not change anything here")
        origin = headers.get("origin")
        if origin is None or not self._hosts:
            return None
        host = urlsplit(origin).hostname or ""
        if host.lower() in self._hosts:
            return None
        return CrossSiteRefused(f"requests from {origin!r} may not change anything here")

    def _check_host(self, host: str) -> HotswapError | None:
        if not self._hosts:
            return None
        name = _host_name(host)
        if name in self._hosts:
            return None
        return HostNotAllowed(f"Host {host!r} is not served here (--allowed-host)")


def _host_name(host: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _check_type(scope: Scope, headers: dict[str, str]) -> HotswapError | None:
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return None
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if not has_body:
        return None
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    upload = scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH
    allowed = ARCHIVE_TYPES if upload else JSON_TYPES
    if media in allowed:
        return None
    wanted = "application/octet-stream (or an archive type)" if upload else "application/json"
    return UnsupportedMediaType(f"Content-Type {media or 'missing'!r}: this route takes "
                                f"{wanted}")
