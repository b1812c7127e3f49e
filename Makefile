# `make demo` and `make test` set up .venv on first use (CPU torch, the core and both adapters, editable).
VENV ?= .venv
PY := $(VENV)/bin/python
ADAPTERS := $(wildcard adapters/*/pyproject.toml)

.PHONY: demo test typecheck results clean redis-server

$(VENV)/.installed: pyproject.toml $(ADAPTERS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]" $(foreach a,$(ADAPTERS),-e $(dir $(a)))
	$(MAKE) oracle-deps
	touch $@

# What the official video path needs and the core never imports (the video oracle test runs it in a child
# process that adds this folder to its path): torchvision, decord, qwen-vl-utils, without their dependencies.
# PyPI's torchvision is a CUDA build; its Python transforms run on the CPU torch
# (tests/video_reference/README.md).
# With the CPU index reachable, `--index-url https://download.pytorch.org/whl/cpu torchvision==0.28.0` also does.
.PHONY: oracle-deps
oracle-deps:
	$(PY) -m pip install -q --no-deps --target $(VENV)/oracle torchvision==0.28.0 decord==0.6.0 qwen-vl-utils==0.0.14

demo: $(VENV)/.installed
	$(VENV)/bin/minirerank demo

# The Redis tests start a real redis-server on loopback: the system package, installed once (CI runs as root).
redis-server:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

# The tests include the GPU check run on the CPU from the wheel folder a bare GPU machine is given (gpu-wheels).
test: $(VENV)/.installed redis-server gpu-wheels
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# A crash (in the suite or at its exit) prints every thread's stack.
	PYTHONFAULTHANDLER=1 $(PY) -m pytest tests $(foreach a,$(ADAPTERS),$(dir $(a))tests) $(wildcard cookbook)

# Types of the core package and both adapters (configuration: [tool.mypy] in pyproject.toml).
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# The demo model's measured results (docs/results.md): quality tables, then training step times. ~40 min on 2 CPUs.
results: $(VENV)/.installed
	$(PY) -m minirerank_integrations.bench.train_step --json docs/results/train_step.json
	$(PY) scripts/demo_results.py --out docs/results

clean:
	rm -rf $(VENV)

# Wheels for the device check's bare GPU machine (CPython 3.12, manylinux x86-64, no registry): what the project
# imports that the machine lacks, at the versions installed here, plus this machine's own build of the binary one
# so `GPU_CHECK_DEVICE=cpu GPU_CHECK_INSTALL=all benchmarks/gpu_check.sh` can prove the folder here.
# benchmarks/gpu_check.sh installs from it with pip's --no-index --no-deps --target.
GPU_WHEELS ?= .gpu-wheels
GPU_WHEEL_PACKAGES := pydantic pydantic-core annotated-types typing-inspection typing-extensions diskcache tqdm
.PHONY: gpu-wheels
gpu-wheels: | $(VENV)/.installed
	pins=$$($(PY) -c 'import sys; from importlib.metadata import version; print(" ".join(f"{p}=={version(p)}" for p in sys.argv[1:]))' $(GPU_WHEEL_PACKAGES)) && \
	for python in 3.12 $$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); do \
	  $(PY) -m pip download -q --only-binary=:all: --python-version $$python --platform manylinux2014_x86_64 \
	    --implementation cp --no-deps -d $(GPU_WHEELS) $$pins || exit 1; \
	done
	ls $(GPU_WHEELS)
