#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what
# it needs (apt packages, Python packages, the encoder weights), then runs
# every test. Tests use real weights, real images and real brokers.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
LINEGUARD_WEIGHTS="$(deploy/fetch-weights.sh)"
export LINEGUARD_WEIGHTS

cargo test --locked --all-targets --features train "$@"
