#!/usr/bin/env bash
# Few-step students against their teacher, and PSO against naive fine-tuning of a student, on the
# embedded default, in one invocation:
#   a) `distill_steps` (assets/jobs/distill_4step.json): the student at 1, 2 and 4 LCM steps against the
#      teacher at DDIM-50 with guidance: probe accuracy, FD-shapes, sharpness, seconds per image.
#   b) `pso` (assets/jobs/pso.json) and the same job with "objective": "naive": a rendering style the base
#      never saw, from 10 images; per step count the style accuracy, class accuracy, FD-shapes to the
#      style's real images and sharpness before and after.
#   bench/run_distill_bench.sh [STUDENT]   (default: train one with assets/jobs/distill_4step.json here;
#                                           give the shipped assets/models/dit_shapes_4step.safetensors to
#                                           measure part b on it and part a from its own run's metrics)
# Writes runs under bench-runs/distill-<date>/ and prints markdown tables (bench/format_distill_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=bench-runs/distill-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
student=${1:-}
if [ -z "$student" ]; then
  echo "== distill_steps" >&2
  "$bin" run -q assets/jobs/distill_4step.json --run-dir "$out/student"
  student="$out/student/model.safetensors"
fi
for objective in pso naive; do
  echo "== $objective" >&2
  "$bin" run -q assets/jobs/pso.json --run-dir "$out/$objective" --set "model=$student" --set "objective=$objective"
done
python3 bench/format_distill_bench.py "$out"
