"""Task defaults (``hotswap.json``): admitted strictly, recorded in the manifest, inside
the version's digest; manifests without them (older servers) stay readable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import KEPT_FILES, AdmissionLimits, BaseModelSpec, admit
from hotswap.adapters.defaults import (
    DEFAULTS_FILE,
    MAX_DEFAULTS_BYTES,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    TaskDefaults,
    parse_defaults,
)
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.sources.hub import HubRef, _select
from hotswap.adapters.store import Store
from hotswap.server import limits as server_limits
from huggingface_hub.hf_api import RepoFile

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False,
}
DEFAULTS: dict[str, Any] = {
    "system_prompt": "Answer with JSON only.",
    "max_tokens": 48,
    "temperature": 0,
    "stop": ["\n\n"],
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
}


def with_defaults(path: Path, defaults: object) -> Path:
    raw = defaults if isinstance(defaults, bytes) else json.dumps(defaults).encode()
    (path / DEFAULTS_FILE).write_bytes(raw)
    return path


def refused(path: Path, spec: BaseModelSpec, limits: AdmissionLimits) -> errors.AdmissionError:
    with pytest.raises(errors.InvalidTaskDefaults) as info:
        admit(path, spec, limits)
    assert info.value.code == "invalid_task_defaults"
    return info.value


def test_hotswap_json_is_kept_and_parsed(tmp_path: Path, spec: BaseModelSpec,
                                         limits: AdmissionLimits, make_lora: MakeLora) -> None:
    path = with_defaults(make_lora(tmp_path / "a"), DEFAULTS)
    report = admit(path, spec, limits)
    assert DEFAULTS_FILE in KEPT_FILES
    assert report.files == ("adapter_config.json", "adapter_model.safetensors", DEFAULTS_FILE)
    assert report.warnings == ()
    assert report.defaults is not None
    assert report.defaults.model_dump() == {**DEFAULTS, "temperature": 0.0}
    assert report.defaults.stop == ["\n\n"] and report.defaults.max_tokens == 48


def test_partial_and_empty_defaults(tmp_path: Path, spec: BaseModelSpec,
                                    limits: AdmissionLimits, make_lora: MakeLora) -> None:
    only = admit(with_defaults(make_lora(tmp_path / "a"), {"response_format": {
        "type": "json_object"}}), spec, limits).defaults
    assert only is not None and only.model_dump() == {"response_format": {"type": "json_object"}}
    # An empty object is no defaults (the file is still one of the version's files).
    empty = admit(with_defaults(make_lora(tmp_path / "b"), {}), spec, limits)
    assert empty.defaults is None and DEFAULTS_FILE in empty.files


def test_hotswap_json_below_the_root_is_not_read(tmp_path: Path, spec: BaseModelSpec,
                                                 limits: AdmissionLimits,
                                                 make_lora: MakeLora) -> None:
    path = make_lora(tmp_path / "a")
    (path / "sub").mkdir()
    with_defaults(path / "sub", {"nonsense": 1})
    report = admit(path, spec, limits)
    assert report.defaults is None
    assert report.warnings == ("ignored file not used by the server: sub/hotswap.json",)


@pytest.mark.parametrize(("defaults", "reason"), [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}},
     "response_format: json_schema.schema is not a valid JSON schema (at properties/a/type)"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"minLength": -1}}}}, "not a valid JSON schema"),
    ({"temperatur": 0.5}, "temperatur: unknown field (accepted: system_prompt, max_tokens"),
    ({"response_format": {"type": "json_object", "extra": 1}},
     "response_format.extra: unknown field"),
    ({"response_format": {"type": "json_schema"}}, "needs a 'json_schema' object"),
    ({"response_format": {"type": "text"}}, "response_format.type: Input should be"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {},
                                                                 "name": "has space"}}},
     "response_format.json_schema.name"),
    ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": True}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": "48"}, "max_tokens: Input should be a valid integer"),
    ({"temperature": 2.5}, "temperature: Input should be less than or equal to 2"),
    ({"stop": "\n"}, "stop: Input should be a valid list"),
    ({"stop": ["x"] * (MAX_STOP_SEQUENCES + 1)}, "stop: List should have at most 16 items"),
    ({"stop": ["x" * (MAX_STOP_CHARS + 1)]}, "stop.0: String should have at most 256"),
    ({"system_prompt": ""}, "system_prompt: String should have at least 1 character"),
    ([1, 2], "must hold a JSON object"),
    (b"{not json", "is not valid JSON"),
    (b'{"temperature": NaN}', "holds NaN: numbers must be finite"),
    (b'{"temperature": 1e999}', "numbers must be finite"),
    (b"[" * 40 + b"]" * 40, "nests deeper than 32 levels"),
])
def test_bad_defaults_are_refused_with_the_reason(
        tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora,
        defaults: object, reason: str) -> None:
    err = refused(with_defaults(make_lora(tmp_path / "a"), defaults), spec, limits)
    assert reason in err.message, err.message
    assert err.message.startswith(DEFAULTS_FILE)


def test_oversized_defaults_are_refused_before_reading(
        tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    big = {"system_prompt": "x" * 100, "pad": " " * MAX_DEFAULTS_BYTES}
    err = refused(with_defaults(make_lora(tmp_path / "a"), big), spec, limits)
    assert f"at most {MAX_DEFAULTS_BYTES}" in err.message
    assert "x" * 16385 not in err.message  # a long system prompt is refused by its size
    too_long = {"system_prompt": "x" * 16385}
    err = refused(with_defaults(make_lora(tmp_path / "b"), too_long), spec, limits)
    assert "system_prompt: String should have at most 16384 characters" in err.message


def test_the_stop_bounds_are_the_servers() -> None:
    assert (MAX_STOP_SEQUENCES, MAX_STOP_CHARS) == (server_limits.MAX_STOP_SEQUENCES,
                                                    server_limits.MAX_STOP_CHARS)


def test_defaults_are_part_of_the_version(tmp_path: Path, store: Store, spec: BaseModelSpec,
                                          limits: AdmissionLimits,
                                          make_lora: MakeLora) -> None:
    """Same weights: without defaults, with them, with others are three versions; the
    same weights and defaults again are the same one."""
    plain = store.add(make_lora(tmp_path / "plain"), name="t", source="upload", spec=spec,
                      limits=limits)
    first = store.add(with_defaults(make_lora(tmp_path / "d1"), DEFAULTS), name="t",
                      tag="d1", source="upload", spec=spec, limits=limits)
    other = store.add(with_defaults(make_lora(tmp_path / "d2"), {**DEFAULTS, "max_tokens": 9}),
                      name="t", tag="d2", source="upload", spec=spec, limits=limits)
    again = store.add(with_defaults(make_lora(tmp_path / "d3"), DEFAULTS), name="u",
                      source="upload", spec=spec, limits=limits)
    assert len({plain.digest, first.digest, other.digest}) == 3
    assert again.digest == first.digest
    assert plain.defaults is None
    assert first.defaults is not None and other.defaults is not None
    assert (first.defaults.max_tokens, other.defaults.max_tokens) == (48, 9)
    assert store.verify() == []


def test_manifest_round_trip(tmp_path: Path, store: Store, spec: BaseModelSpec,
                             limits: AdmissionLimits, make_lora: MakeLora) -> None:
    stored = store.add(with_defaults(make_lora(tmp_path / "a"), DEFAULTS), name="t",
                       source="upload", spec=spec, limits=limits)
    on_disk = json.loads((store.root / "versions" / stored.digest / "manifest.json")
                         .read_text())
    assert on_disk["defaults"] == {**DEFAULTS, "temperature": 0.0}  # as written, set fields
    again = Store(store.root).resolve("t")
    assert again.defaults == stored.defaults
    assert again.defaults is not None and again.defaults.response_format == \
        DEFAULTS["response_format"]
    # A manifest written before defaults existed reads as "no defaults" ...
    del on_disk["defaults"]
    assert Manifest.model_validate(on_disk).defaults is None
    # ... and one a newer server wrote, with a field this one does not know, reads too.
    newer = {**on_disk, "defaults": {"max_tokens": 5, "top_p": 0.5}, "future": 1}
    read = Manifest.model_validate_json(json.dumps(newer))
    assert read.defaults == TaskDefaults(max_tokens=5)


def test_parse_defaults_is_what_adapterctl_checks_with() -> None:
    assert parse_defaults(json.dumps(DEFAULTS).encode()).max_tokens == 48
    with pytest.raises(errors.InvalidTaskDefaults, match="unknown field"):
        parse_defaults(b'{"max_new_tokens": 4}')


def test_hub_pull_takes_hotswap_json() -> None:
    def file(path: str, size: int = 10) -> RepoFile:
        return RepoFile(path=path, size=size, oid="0" * 40)

    tree = [file("adapter_config.json"), file("adapter_model.safetensors"),
            file(DEFAULTS_FILE), file("README.md"), file(f"sub/{DEFAULTS_FILE}")]
    chosen = _select(HubRef("org/a"), tree, AdmissionLimits())
    assert [f.path for f in chosen] == ["adapter_config.json", "adapter_model.safetensors",
                                        DEFAULTS_FILE]
    without = _select(HubRef("org/a"), tree[:2], AdmissionLimits())
    assert [f.path for f in without] == ["adapter_config.json", "adapter_model.safetensors"]
