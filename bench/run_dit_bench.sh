#!/usr/bin/env bash
# DiT throughput, Atelier vs diffusers, side by side in one invocation (same torch 2.11, same threads).
#   bench/run_dit_bench.sh [PYTHON]     PYTHON: an interpreter with torch==2.11.0 and diffusers
# Sampling throughput = images per second for 50-step sampling with classifier-free guidance.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
bin=${ATELIER_BUILD_DIR:-build}/bench/atelier_bench_dit
threads=$(nproc)
printf '%-8s %-10s %14s %14s %10s\n' preset impl "train img/s" "sample img/s" "peak MB"
for cfg in "DiT-T/4 64 20 16 10" "DiT-S/2 16 6 8 4"; do
  set -- $cfg
  a=$("$bin" "$@")
  r=$("$py" bench/dit_reference.py "$@" "$threads")
  "$py" bench/format_dit_bench.py "$a" "$r"
done
