"""The authentication stage of every request: who is calling, and what they may do.

API keys arrive as ``Authorization: Bearer <key>``. Only their sha256 hashes are kept
in memory, compared in constant time against every configured key. Two scopes:
``inference`` (OpenAI endpoints, reading the adapter listings) and ``admin`` (uploads,
pulls, tags, deletes, loads and unloads, vLLM's load/unload routes); an admin key has
both. Without any key configured the server is open (``cli.py`` allows that only on
loopback, or with ``--allow-unauthenticated``) and every caller is :data:`ANONYMOUS`.

Routers take :data:`INFERENCE` or :data:`ADMIN` as a dependency; the pipeline passes the
principal to the ``model`` lookup, which asks :meth:`Principal.check_model` before
anything is read or loaded. A model a key may not use is a 404 for that key, exactly as
if it did not exist.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .errors import (
    AdminPortOnly,
    InsufficientScope,
    InvalidApiKey,
    MissingApiKey,
    ModelNotFound,
    NameNotAllowed,
)
from .key_policy import ALLOW_ALL, KeyPolicy, Rule


class Scope(enum.StrEnum):
    INFERENCE = "inference"
    ADMIN = "admin"
    #: ``/metrics`` under ``--metrics-auth``: its labels name every adapter in use, so a
    #: tenant's inference key does not get it; a scraper's key needs nothing else.
    METRICS = "metrics"


ALL_SCOPES = frozenset(Scope)


def key_id(key: str) -> str:
    """The public name of a key in logs and policies: 12 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    #: Key id for logs and metrics; None for the anonymous caller.
    key_id: str | None = None
    scopes: frozenset[Scope] = ALL_SCOPES
    rule: Rule = field(default_factory=lambda: ALLOW_ALL)

    def may_use(self, model: str) -> bool:
        return self.rule.may_use(_name_of(model))

    def check_model(self, model: str) -> None:
        """404 if this caller may not use ``model`` (as if it did not exist)."""
        if not self.may_use(model):
            raise ModelNotFound(model)

    def may_manage(self, name: str) -> bool:
        return self.rule.may_manage(_name_of(name))

    def check_manage(self, name: str) -> None:
        """403 if this caller may not change the adapter ``name`` (or ``name:tag``)."""
        if not self.may_manage(name):
            raise NameNotAllowed(f"this API key may not manage adapters named "
                                 f"{_name_of(name)!r} (--key-policy)", param="name")


ANONYMOUS = Principal()


@dataclass(frozen=True)
class _Key:
    digest: bytes
    key_id: str
    scopes: frozenset[Scope]


@dataclass
class KeyRing:
    """The configured keys (hashes only) and the policy that applies to them."""

    _keys: list[_Key] = field(default_factory=list)
    policy: KeyPolicy = field(default_factory=KeyPolicy)

    @classmethod
    def of(cls, inference: Iterable[str], admin: Iterable[str],
           policy: KeyPolicy | None = None, metrics: Iterable[str] = ()) -> KeyRing:
        ring = cls(policy=policy or KeyPolicy())
        for keys, scopes in ((inference, frozenset({Scope.INFERENCE})), (admin, ALL_SCOPES),
                             (metrics, frozenset({Scope.METRICS}))):
            for key in keys:
                if not key:
                    raise ValueError("an API key must not be empty")
                ring._keys.append(_Key(hashlib.sha256(key.encode()).digest(), key_id(key),
                                       scopes))
        return ring

    def unknown_policy_ids(self) -> list[str]:
        """Key ids the policy names that no configured key has (a typo leaves a key on
        the policy's default)."""
        ids = {k.key_id for k in self._keys}
        return sorted(set(self.policy.keys) - ids)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def open(self) -> bool:
        """No key configured: every caller is anonymous with every scope."""
        return not self._keys

    def principal(self, presented: str) -> Principal | None:
        """The principal of ``presented``, or None if no configured key matches."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: _Key | None = None
        for key in self._keys:  # every key compared: the time says nothing about which
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        if found is None:
            return None
        return Principal(found.key_id, found.scopes, self.policy.rule_for(found.key_id))


def read_key_file(text: str) -> dict[Scope, list[str]]:
    """``--api-key-file``: one key per line, optionally ``admin:KEY``, ``inference:KEY``
    or ``metrics:KEY`` (bare: inference); blank lines and ``#`` comments skipped."""
    keys: dict[Scope, list[str]] = {scope: [] for scope in Scope}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope, sep, key = line.partition(":")
        if sep and scope in Scope.__members__.values():
            keys[Scope(scope)].append(key.strip())
        elif sep and scope.isalpha() and scope.islower():
            raise ValueError(f"line {n}: unknown scope {scope!r} "
                             "(admin, inference or metrics)")
        else:
            keys[Scope.INFERENCE].append(line)
    return keys


async def authenticate(request: Request) -> Principal:
    """The caller of ``request``: 401 without a valid key when keys are configured."""
    keys: KeyRing = request.app.state.hotswap_keys
    if keys.open:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingApiKey("an API key is required: send 'Authorization: Bearer <key>'")
    principal = keys.principal(token.strip())
    if principal is None:
        raise InvalidApiKey("the API key is not valid for this server")
    return principal


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if scope not in principal.scopes:
            raise InsufficientScope(f"this API key lacks the {scope} scope")
        return principal

    return check


async def on_admin_port(request: Request) -> None:
    """Under ``--admin-port``, admin routes answer on that port only: the socket that
    accepted the connection decides (never a header a client could set)."""
    port: int | None = request.app.state.hotswap_admin_port
    server = request.scope.get("server")
    if port is not None and (server is None or server[1] != port):
        raise AdminPortOnly("adapter administration is served on the admin port only "
                            "(--admin-port), not on this one")


#: Router dependencies: any valid key (inference scope), and an admin key (on the admin
#: port, when there is one).
INFERENCE = Depends(require(Scope.INFERENCE))
ADMIN = Depends(require(Scope.ADMIN))
ADMIN_PORT = Depends(on_admin_port)

PrincipalDep = Annotated[Principal, Depends(authenticate)]


def _name_of(model: str) -> str:
    """The adapter name policies match: no ``:tag``, no hub ``@revision``, and a hub id
    ``Owner/Name`` as the name its pull is stored under (``owner--name``), so one rule
    covers every spelling of the same adapter."""
    name = model.partition("@")[0].partition(":")[0]
    owner, sep, repo = name.partition("/")
    return f"{owner}--{repo}".lower() if sep else name


@dataclass(frozen=True)
class Security:
    """What ``create_app`` enforces: the keys, the Host allowlist (empty: any host) and
    whether /metrics needs a key. The default is open, for tests and loopback use."""

    keys: KeyRing = field(default_factory=KeyRing)
    allowed_hosts: tuple[str, ...] = ()
    metrics_auth: bool = False
    #: The port that alone serves adapter administration (None: every port does).
    admin_port: int | None = None
