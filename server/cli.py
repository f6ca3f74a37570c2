"""``hotswap`` command line: ``serve`` and ``prepare-model``.

Each ``serve`` flag is a ``Settings`` field (env ``HOTSWAP_<NAME>``); help texts
come from the field descriptions so that ``--help`` and the settings agree.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ByteSize, ValidationError
from rich.console import Console

from .config import Settings
from .model_prep import BUNDLED_MODEL_NAME, ModelPreparationError, prepare_bundled_model

app = typer.Typer(
    name="hotswap",
    help="One frozen base model, many task adapters, one OpenAI-compatible endpoint.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)
log = logging.getLogger("hotswap")


def _help(field: str) -> str:
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, ByteSize):
        default = default.human_readable()
    shown = "" if default in (None, []) else f" Default: {default}."
    # Escaped: rich would read "[env: ...]" as markup and drop it.
    return f"{info.description}{shown} \\[env: HOTSWAP_{field.upper()}]"


def _load_settings(overrides: dict[str, Any]) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None and v != []}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            err.print(f"[red]error:[/red] --{where.replace('_', '-')}: {e['msg']}")
        raise typer.Exit(2) from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _resolve_model(settings: Settings) -> tuple[str, str]:
    """Return (model path or id for vLLM, served name)."""
    if settings.model is None:
        try:
            model_dir = prepare_bundled_model(settings.home, err)
        except ModelPreparationError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        return str(model_dir), settings.served_model_name or BUNDLED_MODEL_NAME
    local = Path(settings.model).expanduser()
    if local.is_dir():
        return str(local.resolve()), settings.served_model_name or local.resolve().name
    return settings.model, settings.served_model_name or settings.model


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help=_help("model"))] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help=_help("served_model_name"))
    ] = None,
    host: Annotated[str | None, typer.Option(help=_help("host"))] = None,
    port: Annotated[int | None, typer.Option(help=_help("port"))] = None,
    adapter: Annotated[
        list[str] | None, typer.Option("--adapter", help=_help("adapters"), metavar="NAME=PATH")
    ] = None,
    max_loras: Annotated[int | None, typer.Option(help=_help("max_loras"))] = None,
    max_cpu_loras: Annotated[int | None, typer.Option(help=_help("max_cpu_loras"))] = None,
    max_lora_rank: Annotated[int | None, typer.Option(help=_help("max_lora_rank"))] = None,
    dtype: Annotated[str | None, typer.Option(help=_help("dtype"))] = None,
    max_model_len: Annotated[int | None, typer.Option(help=_help("max_model_len"))] = None,
    memory_fraction: Annotated[float | None, typer.Option(help=_help("memory_fraction"))] = None,
    home: Annotated[Path | None, typer.Option(help=_help("home"))] = None,
    store: Annotated[Path | None, typer.Option(help=_help("store"))] = None,
    import_root: Annotated[
        list[Path] | None,
        typer.Option("--import-root", help=_help("import_roots"), metavar="DIR"),
    ] = None,
    hub_allow: Annotated[
        list[str] | None,
        typer.Option("--hub-allow", help=_help("hub_allow"), metavar="REPO|OWNER|*"),
    ] = None,
    hub_autoload: Annotated[bool | None, typer.Option(
        "--hub-autoload/--no-hub-autoload", help=_help("hub_autoload"))] = None,
    adapter_cache_bytes: Annotated[str | None, typer.Option(
        help=_help("adapter_cache_bytes"), metavar="BYTES")] = None,
    log_level: Annotated[str | None, typer.Option(help=_help("log_level"))] = None,
) -> None:
    """Serve the base model and its adapters over an OpenAI-compatible HTTP API."""
    settings = _load_settings({
        "model": model, "served_model_name": served_model_name, "host": host, "port": port,
        "adapters": adapter, "max_loras": max_loras, "max_cpu_loras": max_cpu_loras,
        "max_lora_rank": max_lora_rank, "dtype": dtype, "max_model_len": max_model_len,
        "memory_fraction": memory_fraction, "home": home, "store": store,
        "import_roots": import_root, "hub_allow": hub_allow, "hub_autoload": hub_autoload,
        "adapter_cache_bytes": adapter_cache_bytes, "log_level": log_level,
    })
    _setup_logging(settings.log_level)
    model_ref, served_name = _resolve_model(settings)

    # Imported here: the vLLM import is slow and --help should not pay for it.
    import uvicorn

    from ..adapters.admission import AdmissionLimits
    from .app import create_app
    from .base_model import read_base_spec, weights_bytes
    from .engine.vllm import VllmEngine, VllmOptions
    from .registry import HubOptions, RegistryOptions

    options = VllmOptions(
        model=model_ref,
        served_model_name=served_name,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        memory_fraction=settings.memory_fraction,
        max_loras=settings.max_loras,
        max_cpu_loras=settings.max_cpu_loras,
        max_lora_rank=settings.max_lora_rank,
    )

    async def start_engine() -> VllmEngine:
        # The engine's start blocks for tens of seconds; keep the event loop free so
        # /health answers meanwhile.
        return await asyncio.to_thread(VllmEngine.start, options)

    registry = RegistryOptions(
        store_dir=settings.store_dir,
        base_spec=lambda: read_base_spec(model_ref),
        # Admission and the engine's LoRA slots must agree on the highest rank.
        limits=AdmissionLimits(max_lora_rank=settings.max_lora_rank),
        import_roots=tuple(settings.import_roots),
        base_model_bytes=weights_bytes(model_ref),
        hub=HubOptions(allow=tuple(settings.hub_allow), autoload=settings.hub_autoload,
                       cache_bytes=int(settings.adapter_cache_bytes)),
    )
    app_ = create_app(start_engine, registry, settings.startup_adapters())
    log.info("listening on http://%s:%d (model %s loading)", settings.host, settings.port,
             served_name)
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)


@app.command("prepare-model")
def prepare_model(
    home: Annotated[Path | None, typer.Option(help=_help("home"))] = None,
) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a model dir (once) and print it."""
    settings = _load_settings({"home": home})
    _setup_logging(settings.log_level)
    try:
        model_dir = prepare_bundled_model(settings.home, err)
    except ModelPreparationError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(model_dir))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
