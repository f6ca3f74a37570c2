"""Server settings: one pydantic-settings model, fed by CLI flags and ``HOTSWAP_*`` env.

Every ``hotswap serve`` flag is generated from a field here (``server/flags.py``): the
field's description is its ``--help`` text, ``json_schema_extra`` may give its flag name
and metavar, so flags and settings can not drift apart. Precedence: flag > env > default.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Adapter and model names users may choose: the store's rule for names and tags.
from ..adapters.errors import InvalidName
from ..adapters.names import validate_own_name
from .limits import LimitSettings
from .source_settings import SourceSettings

DType = Literal["auto", "bfloat16", "float16", "float32"]


#: Names a loopback-bound server answers to unless --allowed-host says otherwise.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_home() -> Path:
    return Path.home() / ".cache" / "hotswap"


def home_from_env() -> Path:
    """``HOTSWAP_HOME`` or the default, for tools that need only the home (tests, bench,
    examples) and must not fail on other settings."""
    return Path(os.environ.get("HOTSWAP_HOME", default_home())).expanduser()


def parse_adapter_spec(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    name = name.strip()
    if not sep or not name or not path.strip():
        raise ValueError(f"adapter must be NAME=PATH, got {spec!r}")
    try:
        validate_own_name(name)
    except InvalidName as exc:
        raise ValueError(exc.message) from None
    p = Path(path.strip()).expanduser()
    if not p.is_dir():
        raise ValueError(f"adapter {name!r}: {p} is not a directory")
    return name, p.resolve()


#: A chat template is text of a few KiB; a larger file is a wrong path.
MAX_CHAT_TEMPLATE_BYTES = 1 << 20


def _compile_template(path: Path) -> None:
    """A template that does not compile is the operator's error, found at start (not a
    400 on every chat request). Compiled as transformers compiles chat templates."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    try:
        env.from_string(path.read_text(encoding="utf-8"))
    except (jinja2.TemplateSyntaxError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a Jinja template: {exc}") from None


class Settings(SourceSettings, LimitSettings, BaseSettings):
    """Validated at start; an invalid value stops the server with a clear message.
    Request and server bounds (``--max-*``, ``--drain-timeout``) are in ``limits.py``;
    where adapters may come from (hub, S3, watched sources) in ``source_settings.py``."""

    # populate_by_name: flags pass field names; env may use the aliases (HOTSWAP_API_KEY).
    model_config = SettingsConfigDict(env_prefix="HOTSWAP_", extra="forbid",
                                      populate_by_name=True)

    model: str | None = Field(
        default=None,
        description="Base model: a Hugging Face id or a local model dir that vLLM accepts. "
        "Default: the bundled SmolLM2-135M-Instruct (prepared once into HOTSWAP_HOME).",
    )
    served_model_name: str | None = Field(
        default=None,
        description="Name clients use for the base model in `model`. "
        "Default: the model dir's name (bundled: SmolLM2-135M-Instruct).",
    )
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    admin_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="A second port (same --host) that alone serves adapter administration "
        "(uploads, pulls, tags, deletes, loads, vLLM's load/unload routes); --port then "
        "answers those with 403. Lets a firewall or Kubernetes NetworkPolicy keep them "
        "from outside callers. Default: everything on --port.",
        json_schema_extra={"metavar": "PORT"},
    )
    adapters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Adapter to serve from the start, as NAME=PATH to a local PEFT dir: "
        "checked and imported into the store like an upload (NAME:latest then points at "
        "it) and loaded, so a bad one stops the start. Repeatable; in env, comma-separated.",
        json_schema_extra={"flag": "--adapter", "metavar": "NAME=PATH"},
    )
    max_loras: int = Field(
        default=4,
        ge=1,
        le=64,
        description="LoRA adapters that can run in one batch (vLLM's adapter slots). "
        "Requests for more distinct adapters wait for a free slot.",
    )
    max_cpu_loras: int | None = Field(
        default=None,
        ge=1,
        description="LoRA adapters kept loaded in host memory (LRU cache behind the slots). "
        "Default: same as --max-loras.",
    )
    max_lora_rank: int = Field(
        default=16,
        description="Highest LoRA rank accepted; slot buffers are sized for it. "
        "One of 1, 8, 16, 32, 64, 128, 256, 320, 512.",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs one model is split across (vLLM's tensor parallelism), for "
        "models larger than one GPU; the node must have that many, and the Kubernetes "
        "gpu overlay asks for as many nvidia.com/gpu. 1 on CPU.",
    )
    prompt_adapters: bool = Field(
        default=True,
        description="Serve prompt-tuning and P-tuning adapters (PEFT PROMPT_TUNING, "
        "P_TUNING) through vLLM's prompt-embeddings input. Off: the engine runs without "
        "that input and such adapters are refused at upload.",
    )
    prefix_adapters: bool = Field(
        default=True,
        description="Serve prefix-tuning adapters (PEFT PREFIX_TUNING): their learned "
        "keys and values are written into the KV cache by a vLLM KV connector. Off: the "
        "engine runs without the connector and such adapters are refused at upload.",
    )
    chat_template: Path | None = Field(
        default=None,
        description="A Jinja chat template file used instead of the model's own: for a "
        "model whose template can not show tools, or has none. Read once at start.",
        json_schema_extra={"metavar": "FILE"},
    )
    tool_call_parser: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="vLLM's parser for the model's own tool-call syntax (hermes, "
        "llama3_json, mistral, qwen3_xml, ...): chat requests may then use tool_choice "
        "'auto' (the default with tools). Needs a chat template that shows tools. "
        "Without it 'auto' is refused; 'required' and named functions are served for any "
        "model either way.",
        json_schema_extra={"metavar": "NAME"},
    )
    dtype: DType = Field(
        default="auto",
        description="Weights and activations dtype. 'auto' takes the model's "
        "(bfloat16 for the bundled model). float32 for bit-exact comparisons with PEFT.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        description="Longest prompt + completion in tokens. Default: the model's context "
        "(bundled model: 8192).",
    )
    memory_fraction: float = Field(
        default=0.1,
        gt=0.0,
        le=0.95,
        description="Share of memory for the KV cache. On CPU: a share of the host's RAM "
        "(the NUMA node's, as vLLM measures it), reserved for the KV cache alone; 0.1 of "
        "24 GiB is ~2.4 GiB, ~100k tokens of the bundled model in bf16, and leaves room "
        "for other processes (vLLM's GPU default of 0.92 can not start on such a box). "
        "On GPU: vLLM's gpu_memory_utilization (weights + KV), e.g. 0.9.",
    )
    home: Path = Field(
        default_factory=default_home,
        description="Cache folder for prepared models and (by default) the adapter store.",
    )
    store: Path | None = Field(
        default=None,
        description="Adapter store folder: content-addressed versions and name:tag refs. "
        "Several servers may share one (e.g. a volume mounted by every replica). "
        "Default: HOTSWAP_HOME/store.",
    )
    import_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folder under which POST /v1/load_lora_adapter may import adapter dirs "
        "given by path. Repeatable; in env, comma-separated. None by default: that endpoint "
        "then refuses every path.",
        json_schema_extra={"flag": "--import-root", "metavar": "DIR"},
    )
    max_uploads: int = Field(
        default=4, ge=1, le=256,
        description="Adapter uploads received at once; more get 429 (each holds up to the "
        "adapter size cap on the store's disk while it arrives).",
    )
    upload_idle_timeout: float = Field(
        default=30.0, gt=0,
        description="Seconds an upload may send no byte before it is refused (408); a "
        "stalled upload holds no worker thread meanwhile.",
        json_schema_extra={"metavar": "SECONDS"},
    )
    store_max_bytes: ByteSize | None = Field(
        default=None,
        description="Byte budget of all stored versions together (e.g. 20GiB); an upload "
        "past it gets 507. Default: none.",
        json_schema_extra={"metavar": "BYTES"},
    )
    gc_grace: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a deleted or evicted version's files stay on disk once nothing "
        "points at it and no request or engine slot here uses it, for other replicas "
        "sharing the store still reading it.",
        json_schema_extra={"metavar": "SECONDS"},
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("api_keys", "HOTSWAP_API_KEYS"),
        description="API key with the inference scope (OpenAI endpoints, adapter "
        "listings), sent as 'Authorization: Bearer KEY'. Repeatable; in env "
        "HOTSWAP_API_KEYS (comma-separated) or HOTSWAP_API_KEY. Flags show in `ps`: prefer "
        "env or --api-key-file. Without any key the server is open, on loopback only.",
        json_schema_extra={"flag": "--api-key", "metavar": "KEY", "env": "HOTSWAP_API_KEYS"},
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("admin_keys", "HOTSWAP_ADMIN_KEYS"),
        description="API key with the admin scope (upload, pull, tag, delete, load, unload, "
        "vLLM's load/unload routes) and the inference scope. Repeatable; in env "
        "HOTSWAP_ADMIN_KEYS (comma-separated) or HOTSWAP_ADMIN_KEY.",
        json_schema_extra={"flag": "--admin-key", "metavar": "KEY",
                           "env": "HOTSWAP_ADMIN_KEYS"},
    )
    api_key_file: Path | None = Field(
        default=None,
        description="File of API keys, one per line: KEY (inference scope), "
        "inference:KEY, admin:KEY or metrics:KEY; blank lines and # comments skipped.",
        json_schema_extra={"metavar": "FILE"},
    )
    key_policy: Path | None = Field(
        default=None,
        description="Per-key adapter policy, YAML or JSON: which models each key id may "
        "call and see, and which adapter names it may manage (docs: SECURITY.md). "
        "`hotswap key-id KEY` prints a key's id.",
        json_schema_extra={"metavar": "FILE"},
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve without API keys on a non-loopback --host (anyone who can reach "
        "the port may then use and change adapters).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values this server answers (others get 421: DNS "
        "rebinding defence). Repeatable; '*' for any. Default: localhost, 127.0.0.1 and ::1 "
        "when --host is loopback, else any.",
        json_schema_extra={"flag": "--allowed-host", "metavar": "HOST"},
    )
    metrics_auth: bool = Field(
        default=False, description="Require a key with the metrics scope for GET /metrics "
        "(admin keys, or metrics:KEY lines of --api-key-file): its labels name adapters."
    )
    metrics_max_adapters: int = Field(
        default=100, ge=1, le=10_000,
        description="Adapters with their own adapter label value on /metrics, first served "
        "first; later ones are counted as adapter=\"other\" (bounds Prometheus series).",
        json_schema_extra={"metavar": "N"},
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of hotswap and uvicorn."
    )

    @field_validator("adapters", "import_roots", "api_keys", "admin_keys",
                     "allowed_hosts", mode="before")
    @classmethod
    def _split_env_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _single_key_env(cls, data: object) -> object:
        """HOTSWAP_API_KEY / HOTSWAP_ADMIN_KEY: one key each, taken whole (a comma is
        part of the key there, not a separator)."""
        if not isinstance(data, dict):
            return data
        for var, field in (("HOTSWAP_API_KEY", "api_keys"), ("HOTSWAP_ADMIN_KEY", "admin_keys")):
            key = os.environ.get(var, "").strip()
            if key:
                given = data.get(field) or data.get(f"HOTSWAP_{field.upper()}") or []
                listed = cls._split_env_list(given) if isinstance(given, str) else given
                data = {**data, field: [*(listed if isinstance(listed, list) else []), key]}
        return data

    @field_validator("adapters")
    @classmethod
    def _check_adapters(cls, value: list[str]) -> list[str]:
        names = [parse_adapter_spec(spec)[0] for spec in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"adapter names given twice: {', '.join(dupes)}")
        return value

    @field_validator("import_roots")
    @classmethod
    def _check_import_roots(cls, value: list[Path]) -> list[Path]:
        roots = []
        for root in value:
            resolved = root.expanduser().resolve()
            if not resolved.is_dir():
                raise ValueError(f"{root} is not a directory")
            roots.append(resolved)
        return roots

    @field_validator("max_lora_rank")
    @classmethod
    def _check_rank(cls, value: int) -> int:
        allowed = (1, 8, 16, 32, 64, 128, 256, 320, 512)
        if value not in allowed:
            raise ValueError(f"must be one of {allowed}")
        return value

    @field_validator("served_model_name")
    @classmethod
    def _check_served_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("chat_template")
    @classmethod
    def _template_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            if not value.is_file():
                raise ValueError(f"{value} is not a file")
            if value.stat().st_size > MAX_CHAT_TEMPLATE_BYTES:
                raise ValueError(f"{value} is over {MAX_CHAT_TEMPLATE_BYTES} bytes")
            _compile_template(value)
        return value

    @model_validator(mode="after")
    def _check_cpu_loras(self) -> Settings:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")
        return self

    @model_validator(mode="after")
    def _check_admin_port(self) -> Settings:
        if self.admin_port is not None and self.admin_port == self.port:
            raise ValueError("admin_port must differ from port")
        return self

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        if not (self.has_keys or self.allow_unauthenticated or is_loopback(self.host)):
            raise ValueError(
                f"refusing to serve {self.host} without API keys: give --api-key / "
                "--admin-key / --api-key-file, or --allow-unauthenticated")
        return self

    @property
    def has_keys(self) -> bool:
        return bool(self.api_keys or self.admin_keys or self.api_key_file)

    @property
    def host_allowlist(self) -> tuple[str, ...]:
        """Host names to answer; empty: any."""
        if "*" in self.allowed_hosts:
            return ()
        if self.allowed_hosts:
            return tuple(self.allowed_hosts)
        return LOOPBACK_NAMES if is_loopback(self.host) else ()

    @property
    def store_dir(self) -> Path:
        return (self.store or self.home / "store").expanduser()

    def startup_adapters(self) -> list[tuple[str, Path]]:
        return [parse_adapter_spec(spec) for spec in self.adapters]
