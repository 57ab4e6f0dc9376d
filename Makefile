# make run   : create .venv, install (torch first), run the default pipeline (TextCNN EQN on GoEmotions)
# make test  : same install, then the test suite (offline)
# make lint  : ruff format --check, ruff check, mypy eqn (configuration in pyproject.toml); .ci/run runs it before the tests
# make bench : speed benchmarks (bench_speed.py: training; bench_annotate.py: annotation at scale; bench_sweep.py: parallel sweeps)
# make data NAME=<dataset> : download a dataset from the Hugging Face hub into the data dir
# make annotator : rebuild the built-in annotator from scratch (experiments/build_annotator.py: train the recipe chosen
#                  on validation by experiments/bench_annotator.py, calibrate, test once, pack eqn/builtin/, annotator.md)
# make quality : quality studies (bench_quality.py, hours on 2 cores), then intensities vs human ratings (bench_intensity.py)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# No hub flags here: GoEmotions is embedded, other datasets come from the data dir or the hub (the code decides).
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-all lint bench quality data clean annotator

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m eqn.run $(ARGS)

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -n auto --maxprocesses=8 --dist worksteal $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

test-all: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n auto --maxprocesses=8 --dist worksteal $(PYTEST_ARGS)

bench: install
	$(PY) experiments/bench_speed.py
	$(PY) experiments/bench_annotate.py
	$(PY) experiments/bench_sweep.py

data: install
	$(PY) -m eqn.data download $(NAME)

annotator: install
	$(PY) experiments/build_annotator.py $(ARGS)

quality: install
	$(PY) experiments/bench_quality.py
	$(PY) experiments/bench_intensity.py

clean:
	rm -rf outputs multirun .cache .pytest_cache
