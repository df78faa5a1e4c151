# hokusai-auth-filter: every entry point a developer or CI needs.
# `make run` starts the local stack; `make test` runs every check CI runs.

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
# Cargo writes under $CARGO_TARGET_DIR when it is set (the tests look there too).
WASM := $(or $(CARGO_TARGET_DIR),target)/$(WASM_TARGET)/release/hokusai_auth_filter.wasm
VENV := .venv
PY := python3

.PHONY: all build build-testing toolchain test-tools venv certs revoke lint unit observability-check test run bench bench-smoke bench-mlflow fuzz clean \
  cost-model cost-model-opt-levels cost-model-envoy cost-model-miss

all: build

toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build: toolchain
	cargo build --release --target $(WASM_TARGET) -p hokusai-auth-filter
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

# The test build of the filter, with the `testing` feature (the `testing.trap_path` switch that
# crashes the VM on purpose, for tests/e2e_vm_reload.rs), in its own target directory: it can
# never be mistaken for, or overwrite, the artifact `make build` writes.
TESTING_WASM_DIR := $(or $(CARGO_TARGET_DIR),target)/testing
build-testing: toolchain
	cargo build --release --target $(WASM_TARGET) -p hokusai-auth-filter --features testing \
	  --target-dir $(TESTING_WASM_DIR)

# The venv is rebuilt only when the pinned requirements change.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Every file generate.sh writes is a target, so deleting any one of them (not only
# ca.crt) reruns it; the script leaves a complete, valid set alone. One grouped
# target (GNU make >= 4.3), so parallel make runs the script once.
CERT_FILES := $(addprefix certs/,$(shell bash certs/generate.sh --list))
certs: $(CERT_FILES)
$(CERT_FILES) &: certs/generate.sh
	@bash scripts/test-tools.sh openssl
	bash certs/generate.sh

# Revokes a certificate of the dev CA in certs/ca.crl (make revoke CERT=certs/unlisted-client.crt);
# restart a running local Envoy to load it (certs/README.md).
revoke: certs
	@test -n "$(CERT)" || { echo "usage: make revoke CERT=certs/<name>.crt" >&2; exit 2; }
	bash certs/generate.sh --revoke "$(CERT)"

lint:
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p hokusai-auth-filter --lib -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p hokusai-auth-filter --lib --features testing \
	  --target-dir $(TESTING_WASM_DIR) -- -D warnings

unit:
	cargo test -p hokusai-auth-filter --lib

# Alert rules (promtool check + unit tests) and the dashboard/alerts against the metric list
# (docs/observability/README.md). promtool: Debian's `prometheus` package.
observability-check: venv
	@command -v promtool >/dev/null || { echo "observability-check: promtool not found;" \
	  "install Debian's prometheus package: apt-get install --no-install-recommends prometheus" >&2; exit 1; }
	promtool check rules docs/observability/alerts.yml
	promtool test rules docs/observability/alerts.test.yml
	$(VENV)/bin/python docs/observability/check.py

# The system tools the checks below use (wrk, promtool, chromium, chromium-driver): installed
# with apt-get when missing and we are root, else the one command to run is printed.
test-tools:
	@bash scripts/test-tools.sh

# Unit tests, the wasm harness stories, the end-to-end suite (real Envoy and MLflow, and a real
# browser), the observability checks, and a few seconds of every benchmark scenario so the
# benchmark never rots.
test: toolchain test-tools lint observability-check build build-testing venv certs
	cargo test --workspace --profile ci -- --test-threads=2
	$(MAKE) bench-smoke

# Local stack: dev auth service :8000, MLflow :5000, Envoy :10000/:10443 (admin :9901).
# Ctrl-C stops it all; state and logs go to .run/.
run: venv build certs
	bash scripts/run-local.sh

# Benchmark (bench/README.md): bare Envoy vs this filter vs Envoy's ext_authz, side by side.
# `bench` (~18 min, needs wrk) writes bench/results.md, bench/results.png and bench/raw/;
# `bench-smoke` runs every scenario for a few seconds and fails unless all answer 200.
# `bench-mlflow` (~1 min) measures only MLflow's own time per call next to what the filter adds
# (the "In production terms" figure `bench` also writes) and prints it.
BENCH_TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
HOSTCALL_WASM := $(BENCH_TARGET_DIR)/bench-hostcall/$(WASM_TARGET)/release/bench_hostcall_cost.wasm
BENCH_ARGS := --bin-dir $(BENCH_TARGET_DIR)/release \
  --noop-wasm $(BENCH_TARGET_DIR)/bench-noop/$(WASM_TARGET)/release/bench_noop_filter.wasm \
  --hostcall-wasm $(HOSTCALL_WASM)
# The devstack binaries, the no-op filter (A_wasm) and the host-call probe (A_replay, and the
# cost model's probes).
define BENCH_PREP
	cargo build --release -p hokusai-devstack --bins
	cargo build --release --locked --target $(WASM_TARGET) \
	  --manifest-path bench/noop-filter/Cargo.toml --target-dir $(BENCH_TARGET_DIR)/bench-noop
	cargo build --release --locked --target $(WASM_TARGET) \
	  --manifest-path bench/hostcall-cost/Cargo.toml --target-dir $(BENCH_TARGET_DIR)/bench-hostcall
endef

bench: build venv certs
	$(BENCH_PREP)
	$(VENV)/bin/python bench/bench.py $(BENCH_ARGS)

bench-smoke: build venv certs
	$(BENCH_PREP)
	$(VENV)/bin/python bench/bench.py --smoke $(BENCH_ARGS)

bench-mlflow: build venv certs
	$(BENCH_PREP)
	$(VENV)/bin/python bench/bench.py --mlflow-only $(BENCH_ARGS)

# Cost model (bench/README.md, "Cost model"): where a request's cost goes.
# `cost-model` (~1 min after the builds, needs valgrind): wasm instructions and host calls per
# request path of the release .wasm, and a callgrind view of the core's warm decision.
# `cost-model-opt-levels`: the warm request's fuel and the .wasm size at opt-level 3 (the
# committed profile) and z and s (built in their own target dirs; Cargo.toml is not touched).
# `cost-model-envoy` (~8 min, needs wrk): Envoy CPU per host call, per wasm filter and per
# request; add COST_MODEL_VARIANTS="z s" to measure those builds of the filter in Envoy too.
# Each prints its tables and updates bench/raw/ and the Cost model section of bench/results.md.
OPT_LEVELS := z s
COST_MODEL_VARIANTS ?=
opt_wasm = $(BENCH_TARGET_DIR)/opt-$(1)/$(WASM_TARGET)/release/hokusai_auth_filter.wasm

cost-model: build venv certs
	cargo bench --profile ci --bench wasm_cost
	$(VENV)/bin/python bench/cost_model.py native
	$(VENV)/bin/python bench/cost_model.py render

cost-model-opt-levels: build venv
	for level in $(OPT_LEVELS); do \
	  CARGO_PROFILE_RELEASE_OPT_LEVEL=$$level cargo build --release --target $(WASM_TARGET) \
	    -p hokusai-auth-filter --target-dir $(BENCH_TARGET_DIR)/opt-$$level || exit 1; \
	done
	cargo bench --profile ci --bench wasm_cost -- --json bench/raw/wasm_cost_opt_levels.json \
	  --compare 3=$(WASM) $(foreach l,$(OPT_LEVELS),--compare $(l)=$(call opt_wasm,$(l)))
	$(VENV)/bin/python bench/cost_model.py render

# `cost-model-miss` (~12 min, needs wrk): the miss path by part, in Envoy: ext_authz (E), the
# filter's miss (D), and do-nothing wasm filters making only its callout (D_call), the callout
# plus one group of its host calls each, and all of them (D_replay); results and tables in
# bench/raw/miss/ (results.md).
cost-model-miss: build venv certs
	$(BENCH_PREP)
	$(VENV)/bin/python bench/bench.py $(BENCH_ARGS) --no-mlflow --out bench/raw/miss \
	  --scenarios A,E,D,D_call,D_reads,D_shared,D_reply,D_writes,D_replay

cost-model-envoy: build venv certs
	$(BENCH_PREP)
	for level in $(COST_MODEL_VARIANTS); do \
	  CARGO_PROFILE_RELEASE_OPT_LEVEL=$$level cargo build --release --target $(WASM_TARGET) \
	    -p hokusai-auth-filter --target-dir $(BENCH_TARGET_DIR)/opt-$$level || exit 1; \
	done
	$(VENV)/bin/python bench/cost_model.py envoy $(BENCH_ARGS) \
	  $(foreach l,$(COST_MODEL_VARIANTS),--variant opt-$(l)=$(call opt_wasm,$(l)))

# Fuzzing (fuzz/README.md): every cargo-fuzz target for FUZZ_SECONDS each (default 60, so
# ~17 min plus a first build of ~8), seeded with real inputs by fuzz/seed.sh; the table of
# executions lands in fuzz/artifacts/summary.txt. Not part of `make test` (too slow; the same
# checks run there as proptest properties, tests/properties/). cargo-fuzz uses nightly-only
# rustc flags: on stable 1.95 they are allowed by RUSTC_BOOTSTRAP=1, set here and in fuzz/run.sh.
FUZZ_SECONDS ?= 60
CARGO_FUZZ_VERSION := 0.13.2
fuzz: certs venv
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	cargo build --release -p hokusai-devstack --bin dev-auth-service
	bash fuzz/seed.sh $(BENCH_TARGET_DIR)/release/dev-auth-service
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	cargo clean
