"""vLLM's ``POST /v1/load_lora_adapter`` with hostile ``lora_path``s: each a clean 4xx
with an OpenAI error body, never a 500, and nothing stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.fakes import make_adapter_dir
from support.http import assert_openai_error


@pytest.mark.parametrize(("path", "status", "code"), [
    ("{root}/a\u0000b", 400, "unsafe_path"),
    ("{root}/new\nline", 400, "unsafe_path"),
    ("{root}/loop", 400, "unsafe_path"),
    ("{root}/" + "x/" * 2100, 400, "unsafe_path"),
    ("{root}/" + "y" * 300, 400, "unsafe_path"),
    ("{root}/looping-files", 400, "unsafe_path"),
    ("{root}/odd-names", 400, "unsafe_path"),
    ("{root}/via-link", 403, "path_not_allowed"),
])
async def test_odd_lora_paths_are_clean_refusals(client: httpx.AsyncClient, import_root: Path,
                                                 tmp_path: Path, path: str, status: int,
                                                 code: str) -> None:
    (import_root / "new\nline").mkdir()
    (import_root / "loop").symlink_to("loop")
    looping = make_adapter_dir(import_root, "looping-files")
    (looping / "README.md").symlink_to("README.md")
    odd = make_adapter_dir(import_root, "odd-names")
    (odd / "sub\ndir").mkdir()
    via = make_adapter_dir(import_root, "via-link")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (via / "README.md").symlink_to(Path("..", "..", "secret.txt"))
    resp = await client.post("/v1/load_lora_adapter", json={
        "lora_name": "evil", "lora_path": path.format(root=import_root)})
    assert_openai_error(resp, status, code)
    assert_openai_error(await client.get("/v1/adapters/evil"), 404)


async def test_load_lora_adapter_can_not_take_a_hub_name(client: httpx.AsyncClient,
                                                        import_root: Path) -> None:
    src = make_adapter_dir(import_root, "x")
    resp = await client.post("/v1/load_lora_adapter",
                             json={"lora_name": "org--repo", "lora_path": str(src)})
    assert_openai_error(resp, 400, "invalid_name")
