#!/usr/bin/env bash
# `pnpm bench [-- P1 ...]`: brings up the services the benchmarks use (Redis, PostgreSQL, the
# Pub/Sub emulator), runs bench/dist/run.js, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh start --owner $$ >&2
trap 'bash scripts/services.sh stop --owner $$ >&2' EXIT
eval "$(bash scripts/services.sh env)"
node --expose-gc bench/dist/run.js "$@"
