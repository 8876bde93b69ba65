# convtrade: two commands to know, `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export PATH := $(CURDIR)/$(BIN):$(PATH)
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export DATA_DIR ?= $(CURDIR)/data
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

SQL ?= select symbol, interval, count(*) as candles, min(ts), max(ts) from raw.candles group by all order by 1

.PHONY: setup demo test ui query bench clean evaluate evaluate-verdict

setup: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

# torch first (the CPU build on disk), then the project with exact pins.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pipeline.dbt_runner.invoke parse
	touch $@

# Kept as dagster_instance.yaml: a dagster.yaml in the folder `dagster dev` starts from makes it warn
# that the file "will not be used" (the instance reads $(DAGSTER_HOME)/dagster.yaml only).
$(DAGSTER_HOME)/dagster.yaml: dagster_instance.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster_instance.yaml $@

demo: setup
	$(BIN)/convtrade demo

# Two pytest workers (pytest-xdist); a test file stays on one worker, so its module fixtures are built once.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

# Every architecture's walk-forward on the real BTC, ETH and SOL 1h files (../shared/data), then docs/results.md.
# Not in CI: it takes tens of minutes on 2 cores.
# EVAL_START: first day (default the files' first, 2020-03-25); EVAL_WINDOWS: training windows per epoch.
EVAL_START ?= 2020-03-25
EVAL_WINDOWS ?= 5000
EVAL_ENV := CONVTRADE_SOURCE=files CONVTRADE_SYMBOLS=BTCUSDT,ETHUSDT,SOLUSDT CONVTRADE_INTERVALS=60 \
	CONVTRADE_START=$(EVAL_START) CONVTRADE_MAX_TRAIN_WINDOWS=$(EVAL_WINDOWS) DATA_DIR=$(CURDIR)/data/evaluate
evaluate: setup
	start=$$(date +%s); $(EVAL_ENV) $(BIN)/convtrade demo && \
	$(EVAL_ENV) $(BIN)/python -m pipeline.backtest.comparison --out docs/results.md \
		--command "make evaluate EVAL_START=$(EVAL_START) EVAL_WINDOWS=$(EVAL_WINDOWS)" \
		--wall-s $$(( $$(date +%s) - start ))

# The backtests, the verdict and docs/results.md again on evaluate's warehouse, without retraining (minutes):
# after a change to the backtests or the statistics. bench/verdict.py then times the statistics.
# EVAL_WALL_S: the wall time of the make evaluate whose models these are (its docs/results.md says it).
EVAL_WALL_S ?=
evaluate-verdict: setup
	start=$$(date +%s); $(EVAL_ENV) $(BIN)/convtrade demo --only backtest && \
	$(EVAL_ENV) $(BIN)/python -m pipeline.backtest.comparison --out docs/results.md \
		--command "make evaluate EVAL_START=$(EVAL_START) EVAL_WINDOWS=$(EVAL_WINDOWS); make evaluate-verdict" \
		$(if $(EVAL_WALL_S),--wall-s $(EVAL_WALL_S)) \
		--note "The backtests and the verdict were then re-run on the same warehouse and trained models by make evaluate-verdict in $$(( $$(date +%s) - start )) s." && \
	$(EVAL_ENV) $(BIN)/python bench/verdict.py --warehouse $(CURDIR)/data/evaluate/warehouse.duckdb

# PYTHONWARNINGS: `dagster dev` warns that it is superseded by `dg dev`, which this project does not
# install (dagster-dg-cli); nothing to act on, so that one warning is filtered.
ui: setup
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

query: setup
	@$(BIN)/convtrade query "$(SQL)"

bench: setup
	@for b in bench/*.py; do echo "# $$b" >&2; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(DATA_DIR) $(DAGSTER_HOME)
