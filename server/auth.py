"""The authentication stage of every request: who is calling, and what they may do.

A FastAPI dependency (:data:`PrincipalDep`) that every route takes; the pipeline passes
the principal to the ``model`` lookup, which asks :meth:`Principal.check_model` before
anything is read or loaded. Today every caller is the anonymous principal with every
scope; API keys, scopes and per-key adapter policy plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    #: Key id for logs and metrics; None for the anonymous caller.
    key_id: str | None = None

    def check_model(self, model: str) -> None:
        """Raise if this caller may not use ``model`` (any name may be used today)."""


ANONYMOUS = Principal()


async def authenticate(request: Request) -> Principal:
    """The caller of ``request`` (no credentials are checked yet)."""
    del request  # the API key will come from its Authorization header
    return ANONYMOUS


PrincipalDep = Annotated[Principal, Depends(authenticate)]
