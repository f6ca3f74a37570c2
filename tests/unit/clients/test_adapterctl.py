"""adapterctl against the app on a real socket (fake engine): every command, and its
one-line errors. The CLI runs in a thread so the in-loop server keeps answering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hotswap.clients.adapterctl import app as cli
from support.app import make_app, on_socket
from support.fakes import make_adapter_dir
from typer.testing import CliRunner, Result


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with on_socket(make_app(tmp_path)) as served:
        yield served


async def run(url: str, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["--url", url, *args])


async def test_adapterctl_commands(url: str, tmp_path: Path) -> None:
    src = make_adapter_dir(tmp_path, "sql-writer")
    up = await run(url, "upload", str(src))
    assert up.exit_code == 0, up.output
    assert "local check passed: LORA, rank 4" in up.stderr
    assert "stored sql-writer:latest -> " in up.stdout
    digest = up.stdout.split("-> ")[1].split()[0]

    table = await run(url, "list")
    assert table.exit_code == 0 and "sql-writer" in table.stdout and "LORA" in table.stdout
    assert "1 adapter(s) on fake-base" in table.stdout
    assert "as full model copies: 123.5 KB" in table.stdout

    listing = json.loads((await run(url, "list", "--json")).stdout)
    assert [a["name"] for a in listing["data"]] == ["sql-writer"]
    shown = json.loads((await run(url, "show", "sql-writer")).stdout)
    assert shown["latest"]["digest"] == digest

    tagged = await run(url, "tag", "sql-writer", "stable", "--version", digest)
    assert tagged.exit_code == 0 and f"sql-writer:stable -> {digest}" in tagged.stdout
    assert (await run(url, "load", "sql-writer:stable")).exit_code == 0
    assert json.loads((await run(url, "show", "sql-writer")).stdout)["loaded"] is True
    assert (await run(url, "unload", "sql-writer")).exit_code == 0
    assert json.loads((await run(url, "show", "sql-writer")).stdout)["loaded"] is False

    assert (await run(url, "delete", "sql-writer")).exit_code == 0
    missing = await run(url, "show", "sql-writer")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: adapter sql-writer not found"


async def test_adapterctl_errors_are_one_line(url: str, tmp_path: Path) -> None:
    bad = make_adapter_dir(tmp_path, "too-big-rank", rank=16)
    # Checked here first, against the server's published base model and limits ...
    refused = await run(url, "upload", str(bad), "--name", "bad")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad refused by the local check: LoRA rank 16")
    assert lines[0].endswith("(rank_too_high)")
    # ... and by the server all the same when the local check is skipped.
    unchecked = await run(url, "upload", str(bad), "--name", "bad", "--no-check")
    assert unchecked.exit_code == 1
    lines = unchecked.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad refused by the server: LoRA rank 16")

    nothing = await run(url, "upload", str(tmp_path / "nope"))
    assert nothing.exit_code == 1 and "nope" in nothing.stderr
    down = await asyncio.to_thread(CliRunner().invoke, cli,
                                   ["--url", "http://127.0.0.1:9", "list"])
    assert down.exit_code == 1 and down.stderr.startswith("error: cannot reach")


async def test_adapterctl_list_has_residency(url: str, tmp_path: Path) -> None:
    for name, seed in (("on-gpu", 1), ("on-disk", 2)):
        up = await run(url, "upload", str(make_adapter_dir(tmp_path, name, seed=seed)))
        assert up.exit_code == 0, up.output
    assert (await run(url, "load", "on-gpu")).exit_code == 0
    # Wide enough that rich does not squeeze the table's columns.
    table = (await asyncio.to_thread(CliRunner().invoke, cli, ["--url", url, "list"],
                                     env={"COLUMNS": "200"})).stdout
    assert "residency" in table
    rows = {line.split()[1]: line for line in table.splitlines()
            if line.split()[1:2] in (["on-gpu"], ["on-disk"])}
    assert rows["on-gpu"].rstrip(" │").endswith("gpu")
    assert rows["on-disk"].rstrip(" │").endswith("disk")


def test_archive_follows_file_symlinks(tmp_path: Path) -> None:
    import tarfile

    from hotswap.clients.archive import default_name, open_archive

    blobs = make_adapter_dir(tmp_path, "blobs")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for f in blobs.iterdir():
        (snapshot / f.name).symlink_to(f)
    with open_archive(snapshot) as archive, tarfile.open(fileobj=archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"adapter_config.json", "adapter_model.safetensors"}
    assert all(m.isreg() for m in members.values())
    assert default_name(tmp_path / "x.tar.gz") == "x"
    assert default_name(snapshot) == "snapshot"


TASK = {"max_tokens": 8, "stop": ["\n"],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "t", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}


async def test_upload_with_defaults(url: str, tmp_path: Path) -> None:
    src = make_adapter_dir(tmp_path, "tasked")
    (src / "hotswap.json").write_text(json.dumps({"max_tokens": 1}))
    task = tmp_path / "task.json"
    task.write_text(json.dumps(TASK))
    up = await run(url, "upload", str(src), "--defaults", str(task))
    assert up.exit_code == 0, up.output
    assert "task defaults: max_tokens, response_format, stop" in up.stdout
    assert f"note: {task} is sent as hotswap.json, in place of" in up.stderr
    # --defaults won over the dir's own file, which is left as it was.
    shown = json.loads((await run(url, "show", "tasked")).stdout)
    assert shown["latest"]["defaults"] == TASK
    assert json.loads((src / "hotswap.json").read_text()) == {"max_tokens": 1}
    # The dir's own hotswap.json is uploaded when no --defaults is given: another version.
    own = await run(url, "upload", str(src), "--name", "own")
    assert own.exit_code == 0, own.output
    shown_own = json.loads((await run(url, "show", "own")).stdout)
    assert shown_own["latest"]["defaults"] == {"max_tokens": 1}
    assert shown_own["latest"]["digest"] != shown["latest"]["digest"]
    listed = await asyncio.to_thread(httpx.get, f"{url}/v1/models")
    cards = {m["id"]: m for m in listed.json()["data"]}
    assert cards["tasked"]["defaults"] == TASK


async def test_bad_defaults_are_refused_before_sending(url: str, tmp_path: Path) -> None:
    src = make_adapter_dir(tmp_path, "tasked")
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"max_tokens": 0}))
    for extra in ([], ["--no-check"]):
        bad = await run(url, "upload", str(src), "--defaults", str(task), *extra)
        assert bad.exit_code == 1
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: tasked refused by the local check")
        assert lines[0].endswith("(invalid_task_defaults)") and "max_tokens" in lines[0]
    missing = await run(url, "upload", str(src), "--defaults", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"")
    task.write_text("{}")
    on_archive = await run(url, "upload", str(archive), "--defaults", str(task))
    assert on_archive.exit_code == 1 and "needs an adapter directory" in on_archive.stderr
    listing = json.loads((await run(url, "list", "--json")).stdout)
    assert listing["data"] == []
