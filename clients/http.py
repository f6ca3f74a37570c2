"""A thin typed client for the hotswap HTTP API (used by adapterctl)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
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
            self._raise_for(resp)
        return resp

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        try:
            err = resp.json()["error"]
            message, code = err["message"], err.get("code")
        except (ValueError, KeyError, TypeError):
            raise ApiError(f"HTTP {resp.status_code}: {resp.text[:200]}",
                           resp.status_code) from None
        raise ApiError(message, resp.status_code, code)

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

    def admission(self) -> dict[str, Any]:
        """``GET /v1/admission``: the base model facts and limits uploads are checked against."""
        policy: dict[str, Any] = self._request("GET", "/v1/admission")
        return policy

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

    def pull(self, repo: str, *, revision: str | None, name: str | None, tag: str,
             on_progress: Callable[[int, int], None]) -> dict[str, Any]:
        """``POST /v1/adapters/pull`` with NDJSON progress; returns the final result.
        ``repo``: a hub repo id, or a URL (``s3://bucket/prefix``, ``hf://owner/name``)."""
        origin = "source" if "://" in repo else "repo"
        body = {origin: repo, "name": name, "tag": tag, "stream": True}
        if revision is not None:
            body["revision"] = revision
        timeout = httpx.Timeout(30.0, read=None)  # a large pull may be silent a while
        try:
            with self._http.stream("POST", "/v1/adapters/pull", json=body,
                                   timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["status"] == "downloading":
                        on_progress(event["completed"], event["total"])
                    elif event["status"] == "error":
                        err = event["error"]
                        raise ApiError(err["message"], None, err.get("code"))
                    elif event["status"] == "success":
                        return {k: v for k, v in event.items() if k != "status"}
        except httpx.TransportError as exc:
            raise ApiError(f"connection to {self._http.base_url} lost: {exc}") from exc
        raise ApiError("the server ended the pull without a result")

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
