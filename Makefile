# The README's two commands live here: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
LISTEN ?= 127.0.0.1:50051
MODELS ?= models/repository

.PHONY: run test test-deps test-servers build-deps ort build lint bench bench-pinned profile soak models clean fuzz-deps fuzz-smoke fuzz hostile bench-decisions bench-sinks bench-floor

## ONNX Runtime's shared library, from the pinned onnxruntime wheel on PyPI.
ort:
	@scripts/fetch-onnxruntime.sh >/dev/null

## Debian packages the build uses (protoc for the etcd client); installs only what is missing.
build-deps:
	@scripts/install-build-deps.sh

build: ort build-deps
	$(CARGO) build --release -p modelgate

## Serve the bundled models on $(LISTEN); prints a ready line and a command to try.
run: build
	target/release/modelgate serve --models $(MODELS) --listen $(LISTEN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Debian packages the tests use (promtool, etcd); installs only what is missing.
test-deps:
	@scripts/install-test-deps.sh

## The Kafka broker (tansu) and S3 server (s3s-fs) the tests run, from crates.io, and Azurite from npm, into .cache/tools; installs only what is missing.
test-servers:
	@scripts/install-test-servers.sh

## Lints, unit tests and the black-box suite (real ORT, real gRPC on loopback).
test: ort build-deps test-deps test-servers lint
	$(CARGO) build -p modelgate
	@# nextest ends on one summary line of every test run; cargo test would
	@# end on an empty doc-test section.
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --lib --bins --tests; \
	fi

## Fuzzing (README "Fuzzing"). cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1
## lets the pinned stable toolchain take them (CI has no nightly).
FUZZ_TARGETS := predict_decode kserve_decode model_toml rollout_plan rollout_plan_structured hostile_model
TARGET ?= $(FUZZ_TARGETS)
FUZZ_SECONDS ?= 600
SMOKE_SECONDS ?= 30
FUZZ_RUN = cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
# hostile_model loads models into ONNX Runtime, which is asked for terabytes
# on purpose: the sanitizer's allocator must answer null (as glibc does)
# rather than abort, libFuzzer must not call a single huge malloc a crash
# (the RSS limit still catches real growth), and ONNX Runtime's process-wide
# caches are not leaks.
FUZZ_ENV_hostile_model := ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0
FUZZ_FLAGS_hostile_model := -malloc_limit_mb=1000000000 -detect_leaks=0
export FUZZ_ENV_hostile_model FUZZ_FLAGS_hostile_model

## cargo-fuzz itself, from crates.io, when missing.
fuzz-deps:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

# Runs $(TARGET) for $(1) seconds each: the committed seeds and saved crashes
# are replayed first, new inputs go to fuzz/target/corpus/ (not committed), a
# crash stops with its input in fuzz/artifacts/<target>/.
define fuzz_each
	@set -e; for t in $(TARGET); do \
	  mkdir -p fuzz/target/corpus/$$t fuzz/corpus/$$t fuzz/regressions/$$t; \
	  echo "fuzz: $$t for $(1) s (log: fuzz/target/$$t.log)"; \
	  env_t=FUZZ_ENV_$$t; flags_t=FUZZ_FLAGS_$$t; \
	  if ! (cd fuzz && env $${!env_t:-} RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t target/corpus/$$t corpus/$$t regressions/$$t -- \
	      -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $${!flags_t:-}) >fuzz/target/$$t.log 2>&1; then \
	    tail -n 60 fuzz/target/$$t.log; echo "fuzz: $$t FAILED; the input is in fuzz/artifacts/$$t/"; exit 1; \
	  fi; \
	  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' fuzz/target/$$t.log; \
	done
endef

## Builds every fuzz target and runs each for $(SMOKE_SECONDS) s (CI).
fuzz-smoke: fuzz-deps build-deps
	$(FUZZ_RUN) build
	$(call fuzz_each,$(SMOKE_SECONDS))

## Longer runs: make fuzz [TARGET=predict_decode] [FUZZ_SECONDS=600].
fuzz: fuzz-deps build-deps
	$(FUZZ_RUN) build $(if $(filter 1,$(words $(TARGET))),$(TARGET))
	$(call fuzz_each,$(FUZZ_SECONDS))

## The hostile-input suite against a real gateway process (README "Limits"):
## model files that declare terabytes or never end, runs a client makes
## endless, floods of streams and idle connections, oversized names.
hostile: ort build-deps
	$(CARGO) build -p modelgate
	$(CARGO) nextest run -p modelgate-tests --no-fail-fast -E 'binary(/^hostile/)'

## Load generator vs raw ONNX Runtime; prints the overhead table.
bench: ort build-deps
	$(CARGO) build --release -p modelgate -p modelgate-benches
	scripts/bench.sh
	scripts/bench-rollback.sh
	scripts/bench-memory.sh
	target/release/allocs_per_request
	target/release/window_bench

## The decision simulator (docs/decisions.md): the controller's decision
## functions on simulated traffic, 1000 runs a cell; one table, rows in
## target/bench/decisions.jsonl. ~10 min on 2 cores; DECISIONS_ARGS=--quick for a
## smoke, DECISIONS_ARGS="--cells ab-aa --runs 200" for a subset.
DECISIONS_ARGS ?=
bench-decisions:
	$(CARGO) build --release -p modelgate-benches --bin decisions
	target/release/decisions $(DECISIONS_ARGS)

## The shadow record sinks' cost (README "Shadow records"): each sink alone,
## the champion's p99 with shadow off/on per sink, and a Kafka broker stopped
## mid-load. Real tansu and s3s-fs on loopback; ~5 min. SINKS_ARGS=--seconds 3 for a quick run.
bench-sinks: ort build-deps test-servers
	$(CARGO) build --release -p modelgate -p modelgate-benches --bin sinks --bin loadgen --bin modelgate
	target/release/sinks $(SINKS_ARGS)

## The gateway against a zero-work gRPC server (the floor) and against the
## floor that also runs the model (floor_server --run-model), alternated,
## medians of 3 rounds at concurrency 1, 8, 32 over KServe v2, with each
## server's CPU time per request (~3 min).
bench-floor: ort build-deps
	$(CARGO) build --release -p modelgate -p modelgate-benches --bin modelgate --bin floor_server --bin loadgen
	scripts/bench-floor.sh

## After `make bench`: gateway on core 0, load generator on core 1 (taskset).
bench-pinned: ort build-deps
	$(CARGO) build --release -p modelgate -p modelgate-benches
	scripts/bench-pinned.sh

## Where the gateway's CPU goes per request, by stage, beside the zero-work
## floor server (perf; README "Performance"): PROFILE_SECONDS per point.
profile: ort build-deps
	$(CARGO) build --release -p modelgate -p modelgate-benches
	scripts/profile.sh

## Overload soak (~5 min): hot version drops, promotions, NaN rollbacks and
## removals every few seconds at 128 in flight; fails on any error but
## RESOURCE_EXHAUSTED, an unanswered admin call or RSS growth over 1.2x.
SOAK_SECONDS ?= 300
soak: ort build-deps
	$(CARGO) build --release -p modelgate -p modelgate-benches
	target/release/soak --seconds $(SOAK_SECONDS)

## Regenerate models/ (needs PyPI; see models/README.md).
models:
	python3 -m venv .cache/venv-models
	.cache/venv-models/bin/pip install --quiet -r models/requirements.txt
	.cache/venv-models/bin/python models/make_models.py

clean:
	$(CARGO) clean
