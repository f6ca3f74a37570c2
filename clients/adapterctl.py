"""``adapterctl``: manage the adapters of a hotswap server.

Every command talks to the server's admin API (``/v1/adapters``); errors print one
line on stderr and exit non-zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from ..adapters.sources import CHUNK
from .archive import default_name, open_archive
from .http import ApiError, HotswapClient

app = typer.Typer(
    name="adapterctl",
    help="Manage the adapters of a hotswap server.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="HOTSWAP_URL",
                                     help="Server base URL.")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="HOTSWAP_API_KEY",
                                            help="API key, if the server wants one.")]
T = TypeVar("T")


class Ctx:
    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None


ctx = Ctx()


@app.callback()
def main_options(url: UrlOpt = "http://127.0.0.1:8000", api_key: KeyOpt = None) -> None:
    ctx.url, ctx.api_key = url, api_key


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def say(message: str) -> None:
    # soft_wrap: digests and paths must stay on one line for scripts that grep them.
    out.print(message, highlight=False, soft_wrap=True)


def _client() -> HotswapClient:
    return HotswapClient(ctx.url, ctx.api_key)


def _call(request: Callable[[HotswapClient], T]) -> T:
    try:
        with _client() as client:
            return request(client)
    except ApiError as exc:
        raise _fail(str(exc)) from None


def human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(help="Adapter dir (PEFT save_pretrained output) "
                                         "or a tar / tar.gz / zip of one.")],
    name: Annotated[str | None, typer.Option(help="Adapter name. Default: the dir name.")
                    ] = None,
    tag: Annotated[str, typer.Option(help="Tag to point at the new version.")] = "latest",
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Run the server's admission checks here first "
        "(against its base model), so a bad adapter is refused before it is sent.")] = True,
    defaults: Annotated[Path | None, typer.Option(
        "--defaults", metavar="FILE", help="Task defaults (JSON: system_prompt, max_tokens, "
        "temperature, stop, response_format) sent as the adapter's hotswap.json, part of "
        "the new version; applied to requests that do not set these fields. Wins over a "
        "hotswap.json in PATH (which is left unchanged). PATH must be a directory.")
    ] = None,
) -> None:
    """Upload an adapter; the server checks it against its base model and stores it."""
    name = name or default_name(path)
    if defaults is not None:
        _check_defaults(path, defaults, name)
    cap = _check_locally(path, name, defaults) if check else None
    try:
        with open_archive(path, defaults) as archive:
            size = os.fstat(archive.fileno()).st_size
            if cap is not None and size > cap:
                raise _fail(f"{name} refused by the local check: the archive is {size} bytes, "
                            f"over the server's cap of {cap} (adapter_too_large)")
            with _transfer_progress() as progress:
                task = progress.add_task(f"uploading {name}", total=size)
                with _client() as client:
                    result = client.upload(_chunks(archive, progress, task), size, name, tag)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except ApiError as exc:
        raise _fail(f"{name} refused by the server: {exc} ({exc.code})" if exc.code
                    else str(exc)) from None
    _report_stored(result)


def _check_defaults(path: Path, defaults: Path, name: str) -> None:
    """Refuse a ``--defaults`` file the server would refuse (the same model checks it),
    before anything is sent."""
    from ..adapters.defaults import DEFAULTS_FILE, read_defaults
    from ..adapters.errors import InvalidTaskDefaults

    if path.is_file():
        raise _fail(f"{path} is an archive: --defaults needs an adapter directory (or put "
                    f"{DEFAULTS_FILE} into the archive)")
    try:
        read_defaults(defaults)
    except InvalidTaskDefaults as exc:
        raise _fail(f"{name} refused by the local check: {defaults}: {exc.message} "
                    f"({exc.code})") from None
    except OSError as exc:
        raise _fail(f"cannot read {defaults}: {exc.strerror or exc}") from None
    if (path / DEFAULTS_FILE).exists():
        err.print(f"note: {defaults} is sent as {DEFAULTS_FILE}, in place of "
                  f"{path / DEFAULTS_FILE}", highlight=False, soft_wrap=True)


def _check_locally(path: Path, name: str, defaults: Path | None = None) -> int | None:
    """Run the server's admission here; return its byte cap for the archive (None if the
    server cannot check adapters now)."""
    # Imported here: admission pulls in torch, which plain list/show need not pay for.
    from ..adapters.errors import AdmissionError
    from . import local_check

    policy = local_check.policy_from(_call(lambda c: c.admission()))
    if policy is None:
        err.print("[yellow]warning:[/yellow] the server cannot check adapters now "
                  "(base model config unknown); skipping the local check", highlight=False)
        return None
    spec, limits = policy
    with err.status(f"checking {name} against {spec.model_id}"):
        try:
            report = local_check.check(path, spec, limits, defaults)
        except AdmissionError as exc:
            raise _fail(f"{name} refused by the local check: {exc.message} "
                        f"({exc.code})") from None
        except OSError as exc:
            raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    err.print(f"local check passed: {report.peft_type}, "
              f"{_shape(report.rank, report.num_virtual_tokens)}, "
              f"{len(report.files)} file(s)", highlight=False)
    return int(limits.max_total_bytes)


def _transfer_progress() -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(),
                    DownloadColumn(), TransferSpeedColumn(), console=err, transient=True)


def _chunks(f: IO[bytes], progress: Progress, task: Any) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        progress.advance(task, len(chunk))
        yield chunk


@app.command()
def pull(
    repo: Annotated[str, typer.Argument(
        metavar="SOURCE",
        help="Hugging Face Hub repo: owner/name (or owner/name@revision, or "
        "hf://owner/name), or an S3 prefix: s3://bucket/prefix (the adapter files directly "
        "under it).")],
    revision: Annotated[str | None, typer.Option(help="Hub only: branch, tag or commit "
                                                 "(default: main).")] = None,
    name: Annotated[str | None, typer.Option(
        help="Adapter name. Default: owner--name for a hub repo, the prefix's last "
        "component for s3://.")] = None,
    tag: Annotated[str, typer.Option(help="Tag to point at the pulled version.")] = "latest",
) -> None:
    """Have the server pull an adapter from the hub (the repo must be on its --hub-allow) or
    from S3-compatible object storage (the bucket on its --s3-allow, credentials the
    server's own). It is checked like an upload and stored as an immutable version; the
    version's source records the hub commit or the weights' S3 ETag."""
    with _transfer_progress() as progress:
        task = progress.add_task(f"server pulling {repo}", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            with _client() as client:
                result = client.pull(repo, revision=revision, name=name, tag=tag,
                                     on_progress=on_progress)
        except ApiError as exc:
            raise _fail(f"pull of {repo} failed: {exc} ({exc.code})" if exc.code
                        else str(exc)) from None
    _report_stored(result)


def _shape(rank: int | None, virtual_tokens: int | None) -> str:
    """A LoRA's rank, or a prompt or prefix adapter's virtual tokens."""
    if virtual_tokens:
        return f"{virtual_tokens} virtual tokens"
    return f"rank {rank}" if rank else ""


def _report_stored(result: dict[str, Any]) -> None:
    v = result["version"]
    say(f"stored {result['name']}:{result['tag']} -> {v['digest']} "
        f"({v['source']}, {v['peft_type']}, {_shape(v['rank'], v.get('num_virtual_tokens'))}, "
        f"{human(v['size_bytes'])})")
    if v.get("defaults"):
        say(f"task defaults: {', '.join(sorted(v['defaults']))}")
    for warning in v.get("warnings", []):
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


@app.command("list")
def list_adapters(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the stored adapters, what they cost on disk next to full model copies, and
    where the server's engine holds them (gpu slot / cpu cache / disk)."""
    listing = _call(lambda c: c.adapters())
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    table = Table("name", "tags", "type", "rank / tokens", "size", "residency")
    for a in listing["data"]:
        latest = a.get("latest") or {}
        tags = ", ".join(f"{t}={d[:12]}" for t, d in sorted(a["tags"].items()))
        table.add_row(a["name"], tags, latest.get("peft_type", ""),
                      _shape(latest.get("rank"), latest.get("num_virtual_tokens")),
                      human(latest.get("size_bytes")),
                      a.get("residency") or "")
    out.print(table)
    count, stored, base = len(listing["data"]), listing["stored_bytes"], \
        listing.get("base_model_bytes")
    footer = f"{count} adapter(s) on {listing['base_model']}: {human(stored)} stored"
    if base:
        footer += f"; as full model copies: {human(base * count)}"
    say(footer)


@app.command()
def show(name: str) -> None:
    """Show one adapter: tags, latest version (with its task defaults, if it has any),
    whether this server holds it in memory."""
    typer.echo(json.dumps(_call(lambda c: c.adapter(name)), indent=2))


@app.command()
def delete(ref: Annotated[str, typer.Argument(help="NAME (all tags) or NAME:TAG.")]) -> None:
    """Delete an adapter or one tag; running requests on it finish first."""
    _call(lambda c: c.delete(ref))
    say(f"deleted {ref}")


@app.command()
def tag(
    name: str,
    tag: str,
    version: Annotated[str, typer.Option("--version", help="Digest of a stored version.")],
) -> None:
    """Point NAME:TAG at a stored version (promote, pin, roll back)."""
    result = _call(lambda c: c.tag(name, tag, version))
    say(f"{name}:{tag} -> {result['version']['digest']}")


@app.command()
def load(name: Annotated[str, typer.Argument(help="NAME or NAME:TAG.")]) -> None:
    """Load into the engine now, so the first request does not wait for it."""
    result = _call(lambda c: c.load(name))
    say(f"loaded {name} ({result['digest'][:12]})")


@app.command()
def unload(name: Annotated[str, typer.Argument(help="NAME or NAME:TAG.")]) -> None:
    """Drop from engine memory; it stays stored and reloads on its next request."""
    result = _call(lambda c: c.unload(name))
    say(f"unloaded {name} ({result['digest'][:12]})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
