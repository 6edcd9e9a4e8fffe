#!/usr/bin/env bash
# Side-by-side data-plane benchmark: direct vs nginx vs podtls-sidecar (tcp and http mode).
# Everything (PKI, nginx, sidecars, load tools) runs on 127.0.0.1 and is torn
# down on exit. Tuning via environment, see docs/benchmarks.md:
#   BENCH_DURATION=5s BENCH_ROUNDS=3 BENCH_HS_WORKERS=32 BENCH_SIDECAR=path
#   BENCH_NO_SIDECAR=1 BENCH_NO_PIN=1 BENCH_JSON=out.json BENCH_KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench/cmd/podtls-bench "$@"
