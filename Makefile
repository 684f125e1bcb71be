# Every target creates .venv on first use: the CPU build of torch first, then anacc itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ANACC  := $(VENV)/bin/anacc
STAMP  := $(VENV)/.installed
TUNE   := $(VENV)/.installed-tune

.PHONY: demo test bench lint models clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,models]"
	touch $(STAMP)

# Ray and Optuna (the [tune] extra) are large; only the tests and `anacc tune` need them.
$(TUNE): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,models,tune]"
	touch $(TUNE)

demo: $(STAMP)
	bash scripts/demo.sh $(VENV)

test: $(TUNE)
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --out benchmarks/results.json

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

models: $(STAMP)
	$(PY) models/train_digits_mlp.py
	$(PY) models/train_digits_cnn.py
	$(PY) models/train_mnist1d_mlp.py
	$(PY) models/train_bss2_mnist.py
	$(PY) models/train_kws_lstm.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
