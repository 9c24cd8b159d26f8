#!/usr/bin/env bash
# `pnpm bench [-- P1 ...]`: runs bench/dist/run.js on the benchmarks named (all by default),
# bringing up only the services those benchmarks use, and stopping only what it started:
#   P3, P4, P10 Redis; P5, P6 PostgreSQL; P8 the Pub/Sub emulator; P1, P2, P7, P9 none.
# So `pnpm bench -- P1 P2 P9` (the hot path, routing, memory) needs no service and starts none.
set -euo pipefail
cd "$(dirname "$0")/.."

needs=()
add() { [[ " ${needs[*]-} " == *" $1 "* ]] || needs+=("$1"); }
wanted=()
for arg in "$@"; do [[ $arg == -- ]] || wanted+=("${arg^^}"); done
[[ ${#wanted[@]} -gt 0 ]] || wanted=(P1 P2 P3 P4 P5 P6 P7 P8 P9 P10)
for id in "${wanted[@]}"; do
  case $id in
    P3 | P4 | P10) add redis ;;
    P5 | P6) add postgres ;;
    P8) add pubsub ;;
  esac
done

if [[ ${#needs[@]} -gt 0 ]]; then
  only=$(IFS=,; echo "${needs[*]}")
  bash scripts/services.sh start --owner $$ --only "$only" >&2
  trap 'bash scripts/services.sh stop --owner $$ --only "$only" >&2' EXIT
  eval "$(bash scripts/services.sh env)"
fi
node --expose-gc bench/dist/run.js "$@"
