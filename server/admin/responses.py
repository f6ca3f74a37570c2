"""OpenAPI documentation of the error statuses the admin and probe routes answer.

Every status a route can answer is listed on it, so clients (and Schemathesis, which
checks each response against the schema) know what to expect. Some come from the route
itself, others from what runs before it for every request: the Host / content-type guard
(400 on a repeated Host header, 415, 421, 403 cross-site), the key check (401, 403), the
body bounds on JSON bodies (408, 413) and readiness (503). Each body is an OpenAI error,
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any

from ..openai.protocol import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

#: What each status means on these routes, unless a route says more.
WHY: dict[int, str] = {
    400: "Malformed name, tag, archive, repo, s3:// URL or path (or a repeated Host "
         "header)",
    401: "API key missing or not valid",
    403: "The key lacks the scope, the name is outside its policy, or a cross-site "
         "request",
    404: "No such adapter, tag or version (or not for this key)",
    408: "The request body stopped arriving",
    409: "A conflict with the source's state (an S3 object changed mid-pull)",
    413: "Request body, archive or adapter over its size cap",
    415: "Content-Type not accepted by this route",
    421: "Host header outside --allowed-host",
    422: "Adapter refused by admission, or the engine could not load it (code says why)",
    429: "Too many uploads at once; see Retry-After",
    502: "Hugging Face Hub or object storage unreachable, or the download broke off",
    503: "Model still loading, engine down, store busy or server draining; see Retry-After",
    507: "The store is over --store-max-bytes",
}
#: What the guard, the key check and readiness may answer on any API route.
COMMON = (400, 401, 403, 421, 503)
#: What a route with a JSON body may answer besides: the body bounds and the type check.
JSON_BODY = (408, 413, 415)
#: The schema component every error body refers to (``ErrorResponse``).
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def errors(*statuses: int, why: dict[int, str] | None = None) -> Responses:
    """``responses=`` for a JSON route: each of ``statuses`` with the error body."""
    why = why or {}
    return {s: {"model": ErrorResponse, "description": why.get(s, WHY[s])} for s in statuses}


def json_errors(*statuses: int, why: dict[int, str] | None = None) -> Responses:
    """:func:`errors` for a route whose own answer is not JSON (``response_class`` set):
    FastAPI would label a ``model`` with the route's media type, but errors are JSON."""
    why = why or {}
    return {s: {"description": why.get(s, WHY[s]),
                "content": {"application/json": {"schema": ERROR_REF}}} for s in statuses}
