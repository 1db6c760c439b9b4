# One entry point for people and CI. `make test` is the test command README.md names.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= demo_model
PORT ?= 8080

.PHONY: venv test test-all lint demo serve bench clean image image-gpu constraints

# A venv that failed half-way (Debian without python3-venv) is removed, so the next try starts clean. pip's own
# lines are the progress of the long step (TensorFlow and friends, several hundred MB on a first run).
$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); } || { rm -rf $(VENV); \
		echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu run: sudo apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	@echo "make: installing the project and its dependencies into $(VENV) (a few minutes the first time)"
	$(PY) -m pip install --progress-bar on -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -m "not slow" -q -rs

test-all: venv
	$(PY) -m pytest -q -rs

lint: venv
	$(PY) -m ruff check model_code container tests benchmarks scripts

demo: venv
	$(PY) -m car_damage.demo --model-dir $(MODEL_DIR) $(DEMO_ARGS)

serve: venv
	$(PY) -m car_damage.demo --serve --model-dir $(MODEL_DIR) --port $(PORT)

bench: venv
	$(PY) benchmarks/bench_inference.py

# The serving image. Without BASE_IMAGE a Debian 12 base is made here (debootstrap + docker import, cached);
# `make image BASE_IMAGE=ubuntu:22.04` builds on a base pulled from a registry. scripts/make_image.sh --help.
image:
	bash scripts/make_image.sh --variant cpu $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE))

# The CUDA variant, on the CUDA base where it can be pulled (BASE_IMAGE= overrides, e.g. the Debian base).
image-gpu:
	bash scripts/make_image.sh --variant gpu --base-image $(or $(BASE_IMAGE),nvidia/cuda:12.5.1-base-ubuntu22.04)

# Re-pin the image's dependencies (container/constraints-{cpu,gpu}.txt) from the index.
constraints:
	bash scripts/lock_constraints.sh

clean:
	rm -rf demo_out .pytest_cache
