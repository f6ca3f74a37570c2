"""One real hotswap server (real vLLM engine, bundled model, float32) for the whole session.

Two LoRA adapters with different ranks and target modules are built with PEFT
before the server starts and registered with ``--adapter`` (so imported into the
session's own ``--store``; ``--import-root`` is an empty temp dir); the server runs in
float32 so its greedy output can be compared with PEFT token for token. A local fake
Hugging Face Hub (``HF_ENDPOINT``) serves the repos of owner ``testorg``, which the server
may pull (``--hub-allow testorg --hub-autoload``). A real S3 server (SeaweedFS) runs for
the session too; the server reaches it through a proxy that tests can tell to cut
downloads (``s3_proxy.cut_after``), and may pull from its bucket ``pulls``
(``--s3-allow pulls``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cut_proxy import CutProxy
from support.fake_hub import FakeHub, serving
from support.peft_ref import make_lora_adapter
from support.prometheus import Prometheus, find_prometheus
from support.s3 import S3Server, running_seaweed
from support.server import ServerInfo, running_server

HUB_OWNER = "testorg"
SESSION_KEY = "sk-session-admin"
#: The bucket the session server may pull from, and one nothing may (403 tests).
PULL_BUCKET = "pulls"
CLOSED_BUCKET = "closed"


@pytest.fixture(scope="session")
def lora_adapters(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lora-a": make_lora_adapter(base_model_dir, root / "lora-a", rank=8,
                                    target_modules=["q_proj", "v_proj", "o_proj"], seed=1),
        "lora-b": make_lora_adapter(
            base_model_dir, root / "lora-b", rank=16, alpha=8, seed=2,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"],
        ),
    }


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[FakeHub]:
    """Empty at first; tests publish repos under ``testorg/`` as they need them."""
    with serving(FakeHub()) as hub:
        yield hub


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS for the session; tests keep apart by bucket and prefix."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as s3:
        for bucket in (PULL_BUCKET, CLOSED_BUCKET):
            s3.create_bucket(bucket)
        yield s3


@pytest.fixture(scope="session")
def s3_proxy(s3_server: S3Server) -> Iterator[CutProxy]:
    """In front of ``s3_server`` for the session server (cuts off unless a test sets
    ``cut_after``)."""
    host, _, port = s3_server.endpoint.removeprefix("http://").partition(":")
    with CutProxy((host, int(port))) as proxy:
        yield proxy


def aws_env(env: pytest.MonkeyPatch, s3: S3Server, endpoint: str | None = None) -> None:
    """Point this process's AWS chain (and so a server started from it) at ``s3``."""
    env.delenv("AWS_PROFILE", raising=False)
    env.delenv("AWS_ENDPOINT_URL", raising=False)
    for var, value in s3.env(endpoint).items():
        env.setenv(var, value)


@pytest.fixture(scope="session")
def server(base_model_dir: Path, lora_adapters: dict[str, Path], fake_hub: FakeHub,
           s3_server: S3Server, s3_proxy: CutProxy,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--dtype", "float32", "--max-model-len", "2048", "--max-loras", "4",
            "--hub-allow", HUB_OWNER, "--hub-autoload", "--s3-allow", PULL_BUCKET]
    for name, path in lora_adapters.items():
        args += ["--adapter", f"{name}={path}"]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    store = tmp_path_factory.mktemp("store")
    import_root = tmp_path_factory.mktemp("import-root")
    # The server process inherits the environment: its huggingface_hub talks to the fake.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_ENDPOINT", fake_hub.url)
        env.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        aws_env(env, s3_server, s3_proxy.url)
        # Keys on: every integration test, the hostile-adapter ones included, runs with
        # authentication as a deployment would.
        with running_server(args, log_path, "smollm2", lora_adapters, store=store,
                            import_root=import_root, api_key=SESSION_KEY) as info:
            env.undo()  # only the server needed it
            yield info


@pytest.fixture(scope="session")
def prometheus() -> Prometheus:
    return Prometheus(find_prometheus())
