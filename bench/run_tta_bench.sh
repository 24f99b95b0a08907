#!/usr/bin/env bash
# Test-time adaptation on Shapes-C, in one invocation:
#   1. SDA's aligned classifier: synthetic images of the shipped base model (guidance 1.0), DDA-projected,
#      fine-tune the source classifier (assets/jobs/tta_sda.json);
#   2. tta_eval at severity SEVERITY (default 5) on COUNT test images per corruption (default 64): source,
#      DDA, DDA with self-ensembling, SDA (assets/jobs/tta_eval.json), with each method's seconds per image.
#   bench/run_tta_bench.sh [RUNS]   (RUNS: a folder whose finished runs are reused)
# Writes runs under bench-runs/tta-<date>/ (or RUNS) and prints the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=${1:-bench-runs/tta-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
run() {  # run NAME JOB [--set ...]: skipped when the run completed before
  local name=$1 job=$2
  shift 2
  if [ -f "$out/$name/metrics.json" ] || [ -f "$out/$name/results.md" ]; then return; fi
  echo "== $name" >&2
  "$bin" run -q "$job" --run-dir "$out/$name" "$@"
}
run sda assets/jobs/tta_sda.json
run eval assets/jobs/tta_eval.json --set "sda_classifier=$out/sda/sda_classifier.safetensors" \
  --set "severity=${SEVERITY:-5}" --set "count=${COUNT:-64}"
cat "$out/eval/results.md"
