"""Adapter names, tags and references (``name`` or ``name:tag``).

Names and tags double as path components in the store (``refs/<name>/<tag>``), so the
pattern is deliberately narrow: lowercase, no ``/``, cannot start with ``.``, at most
64 characters. Anything that passes is a safe single directory entry on every
filesystem the store may live on.

Names containing ``--`` are reserved for hub pulls, which store ``owner/name`` as
``owner--name`` (hub repo ids can not contain ``--`` themselves, so the mapping is
one-to-one). Nothing else may create such a name: otherwise an upload named
``org--repo`` would answer requests for the hub repo ``org/repo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DEFAULT_TAG = "latest"

#: One part of a Hugging Face Hub repo id (owner or name), by the Hub's own rule.
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
#: ``owner/name``.
REPO_ID_PATTERN = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
#: ``owner`` or ``owner/name`` (what ``--hub-allow`` takes besides ``*``).
HUB_ALLOW_PATTERN = re.compile(rf"^{_HUB_PART}(/{_HUB_PART})?$")
#: Joins owner and repo in the name a pull stores under by default (``owner--name``).
HUB_NAME_SEPARATOR = "--"


def validate_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` unchanged, or raise :class:`InvalidName` saying what is wrong."""
    # fullmatch, not match: with match, "$" would also accept a trailing newline.
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid adapter {what} {name!r}: use 1-64 characters from a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def validate_tag(tag: str) -> str:
    return validate_name(tag, what="tag")


def is_hub_name(name: str) -> bool:
    """Whether ``name`` is reserved for hub pulls (it contains ``--``)."""
    return HUB_NAME_SEPARATOR in name


def validate_own_name(name: str) -> str:
    """:func:`validate_name` for names chosen by hand (uploads, imports, tags): also
    :class:`InvalidName` for names reserved for hub pulls."""
    validate_name(name)
    if is_hub_name(name):
        raise InvalidName(
            f"invalid adapter name {name!r}: names containing {HUB_NAME_SEPARATOR!r} are "
            "reserved for hub pulls ('owner/name' is stored as 'owner--name')"
        )
    return name


@dataclass(frozen=True)
class Ref:
    """A parsed reference. ``tag`` is None when the caller wrote a bare name."""

    name: str
    tag: str | None = None

    @property
    def effective_tag(self) -> str:
        return self.tag if self.tag is not None else DEFAULT_TAG

    def __str__(self) -> str:
        return self.name if self.tag is None else f"{self.name}:{self.tag}"


def parse_ref(ref: str) -> Ref:
    """Parse ``name`` or ``name:tag``; raise :class:`InvalidName` on anything else."""
    name, sep, tag = ref.partition(":")
    validate_name(name)
    if not sep:
        return Ref(name)
    return Ref(name, validate_tag(tag))
