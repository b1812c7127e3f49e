# `make demo` and `make test` set up .venv on first use (CPU torch, the core and both adapters, editable).
VENV ?= .venv
PY := $(VENV)/bin/python
ADAPTERS := $(wildcard adapters/*/pyproject.toml)

.PHONY: demo test results clean redis-server

$(VENV)/.installed: pyproject.toml $(ADAPTERS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]" $(foreach a,$(ADAPTERS),-e $(dir $(a)))
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/minirerank demo

# The Redis tests start a real redis-server on loopback: the system package, installed once (CI runs as root).
redis-server:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

test: $(VENV)/.installed redis-server
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests $(foreach a,$(ADAPTERS),$(dir $(a))tests) $(wildcard cookbook)

# The demo model's measured results (docs/results.md): quality tables, then training step times. ~40 min on 2 CPUs.
results: $(VENV)/.installed
	$(PY) benchmarks/train_step.py --json docs/results/train_step.json
	$(PY) scripts/demo_results.py --out docs/results

clean:
	rm -rf $(VENV)
