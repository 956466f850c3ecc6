# mmads: the two commands of the README, and what they build on.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/demo
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-deps lint typecheck check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<27"
	# the CPU wheel of torch first: a bare "torch" would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,spark]"
	touch $(STAMP)

setup: $(STAMP)

# redis-server backs the Redis online-store tests, a Java runtime the Spark offline store (pyspark);
# installed from Debian when missing and root
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null); \
	  else echo "missing:$$missing (the Redis / Spark tests will be skipped)"; fi; fi

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/mmads demo --out $(RUN_DIR)

test: setup system-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy infra encoders feature_repo streaming training serving mmads benchmarks

check: lint typecheck test

clean:
	rm -rf .mmads runs .pytest_cache .mypy_cache .ruff_cache
