#!/usr/bin/env bash
# Benchmarks bkd against buildctl / buildctl-daemonless.sh side by side and
# appends the medians to bench/results.md. Run as root after scripts/setup.sh.
#   scripts/bench.sh [--runs N] [--only tiny-cold,context-cold,...] [--dir DIR] [--no-record]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec cargo bench --locked --bench compare -- "$@"
