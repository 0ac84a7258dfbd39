# stormsim: `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
GO_STAMP := $(VENV)/.go-testbed

.PHONY: run test test-slow bench bench-graph ui setup clean validate validate-quick

setup: $(STAMP) $(GO_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@sh scripts/ensure-chromium.sh
	touch $(STAMP)

# the testbed's Go toolchain (Debian's golang-go) and its two Go programs; never fails the set-up
$(GO_STAMP): $(STAMP) scripts/ensure-go.sh
	@PY=$(PY) sh scripts/ensure-go.sh
	@touch $(GO_STAMP)

run: $(STAMP)
	$(VENV)/bin/stormsim run seed-collapse
	@echo
	$(VENV)/bin/stormsim compare --default

test: $(STAMP) $(GO_STAMP)
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

ui: $(STAMP)
	$(VENV)/bin/stormsim ui

# the validation suite (docs/validation.md): the full one (tens of minutes; report in
# out/validation/), and the quick one that CI runs through tests/test_validate.py (out/validation-quick/)
validate: $(STAMP)
	$(VENV)/bin/stormsim validate

validate-quick: $(STAMP)
	$(VENV)/bin/stormsim validate --quick

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

# the 17-service graph at 1,000 entry req/s for 120 s simulated (docs/performance.md)
bench-graph: $(STAMP)
	$(PY) benchmarks/bench_graph.py

clean:
	rm -rf $(VENV) out .pytest_cache
