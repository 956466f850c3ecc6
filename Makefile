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
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# s3rver: the local S3-compatible server behind `kafka.storage: s3` (npm; node and npm come with the
# machine, else from Debian when root). Without it that storage needs kafka.s3.endpoint and its test skips.
S3RVER := $(VENV)/s3rver/node_modules/.bin/s3rver
setup: $(S3RVER)
$(S3RVER):
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || true
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix $(VENV)/s3rver --no-audit --no-fund --silent s3rver@3.7.1; \
	else echo "npm missing: kafka.storage s3 needs kafka.s3.endpoint; its local-server test will be skipped"; fi

# redis-server backs the Redis online-store tests; installed from Debian when missing and root
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null); \
	  else echo "redis-server missing: the Redis tests will be skipped"; fi; }

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
