"""A thin typed client for the hotswap HTTP API (used by adapterctl)."""

from __future__ import annotations

from collections.abc import Iterable
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

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
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
        return resp

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._request("GET", "/v1/models")["data"]
        return data

    def adapters(self) -> dict[str, Any]:
        """``GET /v1/adapters``: ``data`` plus the storage totals."""
        listing: dict[str, Any] = self._request("GET", "/v1/adapters")
        return listing

    def adapter(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self._request("GET", f"/v1/adapters/{name}")
        return info

    def upload(self, chunks: Iterable[bytes], size: int, name: str, tag: str
               ) -> dict[str, Any]:
        """Stream an archive; ``size`` becomes Content-Length so the server can refuse an
        oversized upload before any byte is sent twice."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        result: dict[str, Any] = self._request(
            "POST", "/v1/adapters", params={"name": name, "tag": tag}, content=chunks,
            headers=headers, timeout=httpx.Timeout(30.0, read=600.0, write=600.0),
        )
        return result

    def delete(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/v1/adapters/{ref}")
        return result

    def tag(self, name: str, tag: str, digest: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", f"/v1/adapters/{name}/tags/{tag}",
                                               json={"digest": digest})
        return result

    def load(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/adapters/{ref}/load")
        return result

    def unload(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/adapters/{ref}/unload")
        return result
