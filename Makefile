# Every target builds its own virtualenv, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench bench-quick soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/fluxion demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# Minutes of churn with random SIGKILL and SIGSTOP; prints the counts.
soak: $(STAMP)
	FLUXION_SOAK_SECONDS=$${FLUXION_SOAK_SECONDS:-180} $(BIN)/python -m pytest -q -s tests/test_soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
