# hokusai-auth-filter: every entry point a developer or CI needs.
# `make run` starts the local stack; `make test` runs every check CI runs.

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/hokusai_auth_filter.wasm
VENV := .venv
PY := python3

.PHONY: all build toolchain venv certs lint unit test run bench bench-smoke clean

all: build

toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build: toolchain
	cargo build --release --target $(WASM_TARGET) -p hokusai-auth-filter
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

# The venv is rebuilt only when the pinned requirements change.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

certs: certs/ca.crt
certs/ca.crt: certs/generate.sh
	bash certs/generate.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p hokusai-auth-filter --lib -- -D warnings

unit:
	cargo test -p hokusai-auth-filter --lib

test: toolchain lint build venv certs
	cargo test --workspace --release -- --test-threads=2

clean:
	cargo clean
