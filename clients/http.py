"""A thin typed client for the hotswap HTTP API (used by adapterctl)."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """The server answered with an OpenAI-format error (or could not be reached)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class HotswapClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> HotswapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ApiError(err["message"], resp.status_code, err.get("code"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(f"HTTP {resp.status_code}: {resp.text[:200]}",
                               resp.status_code) from None
        return resp.json()

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._request("GET", "/v1/models")["data"]
        return data
