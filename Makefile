# Two commands (see README): `make demo` sets up and runs the main job; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := ../shared/datasets/amazon-beauty-bert4rec/interactions.csv.gz
DEMO_EPOCHS ?= 5

.PHONY: setup demo test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: setup
	$(BIN)/seqrec train --data $(DATA) --model sasrec --loss ce --out runs/beauty-ce \
		--epochs $(DEMO_EPOCHS) --valid-users 10000 --recommendations runs/beauty-ce/top10.csv

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m benchmarks.run beauty-ce --epochs 30 --patience 6 --valid-users 10000
