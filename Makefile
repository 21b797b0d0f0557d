# The two commands: `make run` (local testnet + relay) and `make test` (everything CI checks).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
FORGE := tools/node_modules/@foundry-rs/forge-linux-amd64/bin/forge
export FOUNDRY_DISABLE_NIGHTLY_WARNING := 1

.PHONY: setup run test fmt-check clippy forge-test compose-check cargo-test bench

## Install the pinned testnet tools into tools/ (idempotent, fast when done).
setup:
	bash scripts/setup.sh --quiet

## Local testnet (anvil, bitcoin regtest, localstripe) and a relay on it.
run: setup
	cargo run --locked -p relay -- dev

## Everything CI checks.
test: setup fmt-check clippy forge-test compose-check cargo-test
	@echo "make test: all checks passed"

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

forge-test:
	cd contracts && ../$(FORGE) test --offline

compose-check:
	bash docker/validate-compose.sh

cargo-test:
	cargo test --workspace --locked --no-fail-fast

## Throughput and memory figures (release build; see README).
bench: setup
	cargo bench --locked -p relay --bench throughput
