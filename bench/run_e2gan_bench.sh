#!/usr/bin/env bash
# E2GAN on the embedded default, in one invocation:
#   1. teachers: a DiffFit adapter of the shipped base per Shapes style (assets/jobs/e2gan_teacher.json),
#      and their edit pairs (assets/jobs/e2gan_data.json: SDEdit at strength 0.6, 512 inputs, the 256
#      nearest k-means centres kept, 64 held-out with ground-truth restyles);
#   2. a base generator on three edits (BASE_EDITS, default outline, striped, pixel; assets/jobs/e2gan_base.json;
#      widths BASE_CHANNELS, default [16,32,64]);
#   3. the new edit (NEW_EDIT, default night: the most distant from its input), every way the
#      e2gan_concept job learns it: LoRA with the rank search (E2GAN),
#      LoRA with uniform ranks 1, 2 and 4 (no search), full fine-tuning of the base and a generator from
#      scratch (pix2pix-style), the last two with held-out evaluations every 100 steps so the time at
#      which each first matches the searched LoRA's fidelity can be read off;
#   4. export of the searched edit at 256x256 (ONNX and ncnn, fp32/fp16) with parity and one-thread latency.
#   bench/run_e2gan_bench.sh [RUNS]   (RUNS: a folder whose teachers/pairs/base are reused if present)
# Writes runs under bench-runs/e2gan-<date>/ (or RUNS) and prints markdown tables (bench/format_e2gan_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=${1:-bench-runs/e2gan-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
run() {  # run NAME JOB [--set ...]: skipped when the run completed before
  local name=$1 job=$2
  shift 2
  if [ -f "$out/$name/metrics.json" ]; then return; fi
  echo "== $name" >&2
  "$bin" run -q "$job" --run-dir "$out/$name" "$@"
}
base_edits=(${BASE_EDITS:-outline striped pixel})
new_edit=${NEW_EDIT:-night}
for s in "${base_edits[@]}" "$new_edit"; do
  run "teacher_$s" assets/jobs/e2gan_teacher.json --set "styles=[\"$s\"]"
  run "pairs_$s" assets/jobs/e2gan_data.json --set "adapter=$out/teacher_$s/adapter.safetensors"
done
pairs=""
for s in "${base_edits[@]}"; do pairs+="${pairs:+,}\"$out/pairs_$s/pairs.safetensors\""; done
run base assets/jobs/e2gan_base.json --set "pairs=[$pairs]" --set "channels=${BASE_CHANNELS:-[16,32,64]}"
concept=(--set "generator=$out/base/generator.safetensors" --set "pairs=$out/pairs_$new_edit/pairs.safetensors")
run lora_search assets/jobs/e2gan_concept.json "${concept[@]}" --set eval_every=100
for r in 1 2 4; do
  run "lora_uniform_r$r" assets/jobs/e2gan_concept.json "${concept[@]}" --set search=false --set "rank=$r" \
    --set eval_every=100
done
run full assets/jobs/e2gan_concept.json "${concept[@]}" --set method=full --set lr=0.0002 --set eval_every=100
run scratch assets/jobs/e2gan_concept.json "${concept[@]}" --set method=scratch --set lr=0.0002 --set steps=4000 \
  --set eval_every=100 --set checkpoint_every=500
run export assets/jobs/export_gan.json --set "generator=$out/base/generator.safetensors" \
  --set "edit=$out/lora_search/edit.safetensors"
python3 bench/format_e2gan_bench.py "$out"
