# The two commands: `make run` (local testnet + relay) and `make test` (everything CI checks).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
FORGE := tools/node_modules/@foundry-rs/forge-linux-amd64/bin/forge
export FOUNDRY_DISABLE_NIGHTLY_WARNING := 1

.PHONY: setup run test fmt-check clippy forge-test artifacts compose-check harness-check cargo-test schemathesis bench

## Install the pinned testnet tools into tools/ (idempotent, fast when done).
setup:
	bash scripts/setup.sh --quiet

## Local testnet (anvil, bitcoin regtest, localstripe) and a relay on it.
run: setup
	cargo run --locked -p relay --features dev -- dev

## Everything CI checks. Ends with one totals line over the forge and cargo test runs.
test: setup fmt-check clippy forge-test compose-check harness-check cargo-test schemathesis
	@awk '/^test result:/ {p+=$$4; f+=$$6} /^Suite result:/ {p+=$$4; f+=$$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/forge-test.log target/cargo-test.log

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

forge-test:
	mkdir -p target
	cd contracts && ../$(FORGE) test --offline 2>&1 | tee ../target/forge-test.log
	bash scripts/export-artifacts.sh --check

## Rebuild the contracts and rewrite adapters/ethereum/artifacts/ (ABI + bytecode the Rust side loads; commit them).
artifacts: setup
	cd contracts && ../$(FORGE) build --offline
	bash scripts/export-artifacts.sh

compose-check:
	bash docker/validate-compose.sh

## The production binary (and so the Docker image) does not link the test harness.
harness-check:
	@if cargo tree --locked -p relay -e normal,build | grep -q relay-testnet; then \
	  echo "harness-check: the production relay links relay-testnet" >&2; exit 1; fi
	@echo "harness-check: the production relay does not link the test harness"

cargo-test:
	mkdir -p target
	cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/cargo-test.log

## Fuzz the API against its OpenAPI document (a few minutes; no webhook leaves loopback).
schemathesis: cargo-test
	cargo build --locked -p relay
	bash scripts/schemathesis.sh target/debug/relay

## Throughput and memory figures (release build; see README).
bench: setup
	cargo bench --locked -p relay-bitcoin --bench scan
	cargo bench --locked -p relay-core --bench risk
	cargo bench --locked -p relay --bench throughput
