"""Per-key adapter policy (``--key-policy FILE``, YAML or JSON): which adapters each API
key may call, and under which names an admin key may manage adapters.

Keys are named by their *key id*, the first 12 hex digits of the key's sha256
(``hotswap key-id`` prints it), so the policy file holds no secret::

    keys:
      3f2a9c1b0d4e:                       # the SQL team's key
        models: ["sql-*", "SmolLM2-135M-Instruct"]
        manage: ["sql-*"]
    default:                              # every key not listed
      models: ["SmolLM2-135M-Instruct"]
      manage: []

Patterns are shell-style (``fnmatch``, case-sensitive) over the adapter *name*: a tag or
hub revision (``name:tag``, ``owner/name@rev``) is not part of what is matched. A key not
listed gets ``default``; without ``default``, everything.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")


class Rule(BaseModel):
    """What one key may do."""

    model_config = ConfigDict(extra="forbid")

    #: Model ids (base name or adapter names) the key may call and see.
    models: list[str] = Field(default_factory=lambda: ["*"])
    #: Adapter names an admin key may upload, pull, tag, delete, load and unload.
    manage: list[str] = Field(default_factory=lambda: ["*"])

    def may_use(self, name: str) -> bool:
        return _matches(self.models, name)

    def may_manage(self, name: str) -> bool:
        return _matches(self.manage, name)


ALLOW_ALL = Rule()


class KeyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: dict[str, Rule] = Field(default_factory=dict)
    default: Rule = Field(default_factory=Rule)

    @field_validator("keys")
    @classmethod
    def _key_ids(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        for key_id in value:
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(f"{key_id!r} is not a key id (12 lowercase hex digits: "
                                 "`hotswap key-id KEY` prints it)")
        return value

    def rule_for(self, key_id: str) -> Rule:
        return self.keys.get(key_id, self.default)


def load_policy(path: Path) -> KeyPolicy:
    """Read ``path`` (JSON if it parses as JSON, else YAML); ValueError says what is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no objects
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: neither JSON nor YAML: {exc}") from None
    except ValueError as exc:  # a key given twice (JSON)
        raise ValueError(f"{path}: {exc}") from None
    if not data:
        # An empty policy would allow every key everything: say so instead.
        raise ValueError(f"{path}: the policy is empty (no 'keys', no 'default')")
    try:
        return KeyPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise ValueError(f"{path}: {where}: {first['msg']}") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"{key!r} is given twice")
        seen[key] = value
    return seen


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (YAML keeps the last one, so a
    key id listed twice would silently lose its first rule)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False
                          ) -> dict[object, object]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        dupes = {str(k) for k in keys if keys.count(k) > 1}
        if dupes:
            raise yaml.constructor.ConstructorError(
                None, None, f"{', '.join(sorted(dupes))} given twice", node.start_mark)
        mapping: dict[object, object] = super().construct_mapping(node, deep=deep)
        return mapping


def _matches(patterns: list[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
