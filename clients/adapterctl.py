"""``adapterctl``: inspect the adapters a hotswap server serves.

Today: ``list`` and ``show``. Upload, delete, tag, pull, load and unload arrive
with the adapter registry (issue #3).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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


class Ctx:
    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None


ctx = Ctx()


@app.callback()
def main_options(url: UrlOpt = "http://127.0.0.1:8000", api_key: KeyOpt = None) -> None:
    ctx.url, ctx.api_key = url, api_key


def _adapters() -> list[dict[str, Any]]:
    try:
        with HotswapClient(ctx.url, ctx.api_key) as client:
            return [m for m in client.models() if m.get("parent")]
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command("list")
def list_adapters(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the adapters the server serves."""
    adapters = _adapters()
    if as_json:
        typer.echo(json.dumps(adapters, indent=2))
        return
    table = Table("name", "type", "base", "source")
    for a in adapters:
        table.add_row(a["id"], a.get("kind") or "", a["parent"], a.get("root") or "")
    out.print(table)


@app.command()
def show(name: str) -> None:
    """Show one adapter."""
    found = [a for a in _adapters() if a["id"] == name]
    if not found:
        err.print(f"[red]error:[/red] no adapter named {name!r}")
        raise typer.Exit(1)
    typer.echo(json.dumps(found[0], indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
