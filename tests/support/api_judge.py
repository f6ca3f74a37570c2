"""Schemathesis as an outside judge of the HTTP API: the app's own OpenAPI document, the
checks every response must pass, and the app on the fake engine that answers them in
process (over ASGI, through Schemathesis's client, with the lifespan running)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hotswap.server.auth import KeyRing, Security
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.app import make_app
from support.fakes import make_adapter_dir, service_options

log = logging.getLogger(__name__)

USER, ADMIN, METRICS = "sk-judge-user", "sk-judge-admin", "sk-judge-metrics"
#: The adapter the app starts with, so listings and lookups have something to show.
STARTUP_ADAPTER = "extract"

#: What every response must pass. Left out: ``positive_data_acceptance`` (a request the
#: schema allows may still be refused with a 4xx by design: tools and other features we
#: do not serve are 400 ``unsupported_parameter``, and no schema can say which bytes are
#: a valid adapter archive), and ``unsupported_method``, which
#: tests/unit/server/test_schemathesis.py asserts on its own until 405s carry ``Allow``.
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
]


def keyed_app(root: Path) -> FastAPI:
    """The app on a fresh fake engine with a store under ``root``, inference, admin and
    metrics keys, ``root/imports`` as import root and one adapter loaded at start."""
    imports = root / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.of([USER], [ADMIN], metrics=[METRICS])
    return make_app(root, options=service_options(root, (imports,)),
                    adapters=[(STARTUP_ADAPTER, make_adapter_dir(root, "startup", seed=1))],
                    security=Security(keys=keys))


def openapi_of(app: FastAPI) -> dict[str, Any]:
    """The document ``GET /openapi.json`` serves (generating it starts nothing)."""
    return app.openapi()


def schema_of(document: dict[str, Any]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(document)


def operations(document: dict[str, Any]) -> set[str]:
    """Every operation of ``document``, labelled as Schemathesis labels them."""
    return {f"{method.upper()} {path}" for path, ops in document["paths"].items()
            for method in ops}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def running(app: FastAPI) -> Iterator[ASGIClient]:
    """A Schemathesis ASGI client of ``app``, its lifespan started and /ready 200."""
    with ASGIClient(app) as client:
        try:
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise AssertionError("the app never became ready")
                time.sleep(0.01)
            yield client
        finally:
            # Schemathesis keeps started lifespans for the process; end this one (the
            # fake engine's shutdown) with the test module, not at interpreter exit.
            shutdown_lifespans()
