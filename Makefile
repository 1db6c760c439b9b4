# One entry point for people and CI. `make test` is the test command README.md names.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= demo_model
PORT ?= 8080

.PHONY: venv test test-all lint demo serve bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
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

clean:
	rm -rf demo_out .pytest_cache
