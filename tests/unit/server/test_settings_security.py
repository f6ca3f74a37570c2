"""Security settings: no open server off loopback, keys from flags, env and files."""

from __future__ import annotations

import pytest
from hotswap.server.config import Settings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOTSWAP_API_KEY", "HOTSWAP_API_KEYS", "HOTSWAP_ADMIN_KEY",
                 "HOTSWAP_ADMIN_KEYS", "HOTSWAP_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_open_server_only_on_loopback() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert not Settings(host=host).has_keys
    for host in ("0.0.0.0", "10.0.0.7", "::"):
        with pytest.raises(ValidationError, match="without API keys"):
            Settings(host=host)
        assert Settings(host=host, allow_unauthenticated=True).host_allowlist == ()
        assert Settings(host=host, api_keys=["k"]).has_keys


def test_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_API_KEY", "sk-one")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["sk-one"]
    monkeypatch.setenv("HOTSWAP_ADMIN_KEYS", "sk-a,sk-b")
    assert [k.get_secret_value() for k in Settings().admin_keys] == ["sk-a", "sk-b"]
    assert "sk-a" not in repr(Settings())  # secrets never printed


def test_host_allowlist_defaults() -> None:
    assert Settings().host_allowlist == ("localhost", "127.0.0.1", "::1")
    assert Settings(allowed_hosts=["api.example"]).host_allowlist == ("api.example",)
    assert Settings(allowed_hosts=["*"]).host_allowlist == ()


def test_single_key_variables_are_taken_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_ADMIN_KEY", "a,Zm9vYmFy")
    assert [k.get_secret_value() for k in Settings().admin_keys] == ["a,Zm9vYmFy"]
    monkeypatch.setenv("HOTSWAP_API_KEYS", "k1, k2")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["k1", "k2"]
