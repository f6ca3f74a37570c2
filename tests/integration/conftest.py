"""One real hotswap server (real vLLM engine, bundled model, float32) for the whole session.

Two LoRA adapters with different ranks and target modules are built with PEFT
before the server starts and registered with ``--adapter`` (so imported into the
session's own ``--store``; ``--import-root`` is an empty temp dir); the server runs in
float32 so its greedy output can be compared with PEFT token for token. A local fake
Hugging Face Hub (``HF_ENDPOINT``) serves the repos of owner ``testorg``, which the server
may pull (``--hub-allow testorg --hub-autoload``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_hub import FakeHub, serving
from support.peft_ref import make_lora_adapter
from support.prometheus import Prometheus, find_prometheus
from support.server import ServerInfo, running_server

HUB_OWNER = "testorg"
SESSION_KEY = "sk-session-admin"


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
def server(base_model_dir: Path, lora_adapters: dict[str, Path], fake_hub: FakeHub,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--dtype", "float32", "--max-model-len", "2048", "--max-loras", "4",
            "--hub-allow", HUB_OWNER, "--hub-autoload"]
    for name, path in lora_adapters.items():
        args += ["--adapter", f"{name}={path}"]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    store = tmp_path_factory.mktemp("store")
    import_root = tmp_path_factory.mktemp("import-root")
    # The server process inherits the environment: its huggingface_hub talks to the fake.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_ENDPOINT", fake_hub.url)
        env.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # Keys on: every integration test, the hostile-adapter ones included, runs with
        # authentication as a deployment would.
        with running_server(args, log_path, "smollm2", lora_adapters, store=store,
                            import_root=import_root, api_key=SESSION_KEY) as info:
            env.undo()  # only the server needed it
            yield info


@pytest.fixture(scope="session")
def prometheus() -> Prometheus:
    return Prometheus(find_prometheus())
