#!/usr/bin/env bash
# DiffFit vs full fine-tuning, BitFit and LoRA-r8 on the embedded default, side by side in one invocation:
# the shipped base model adapted to a held-out Shapes domain with its own classes (the five concept glyphs,
# drawn in the outline style, never seen by the base), same steps, batch, data and evaluation for all;
# a fifth row trains LoRA at rank 1, about DiffFit's parameter budget.
#   bench/run_difffit_bench.sh [STEPS] [BASE]      (defaults: 1500, assets/models/dit_shapes.safetensors)
# Writes runs under bench-runs/difffit-<date>/ and prints a markdown table (bench/format_difffit_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
base=${2:-assets/models/dit_shapes.safetensors}
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=bench-runs/difffit-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
common=(--set "base=$base" --set "steps=$steps" --set batch=32 --set 'glyphs=["spiral","bolt","key","moon","eye"]'
        --set 'classes=[]' --set 'styles=["outline"]' --set sample_every=100000 --set checkpoint_every=100000 --set eval_per_class=32)
# DiffFit and BitFit use difffit.json's recipe (lr 1e-3, x10 on their tensors); full fine-tuning and LoRA
# keep theirs (1e-4 full, 1e-3 LoRA): 1e-2 diverges LoRA and 1e-3 is far above full fine-tuning's usual rate.
for method in full difffit bitfit lora; do
  echo "== $method" >&2
  lr=(); case $method in full|lora) lr=(--set lr=0.0001) ;; esac
  "$bin" run -q assets/jobs/difffit.json --run-dir "$out/$method" "${common[@]}" "${lr[@]}" --set "method=$method"
done
echo "== lora rank 1" >&2
"$bin" run -q assets/jobs/difffit.json --run-dir "$out/lora_r1" "${common[@]}" --set lr=0.0001 --set method=lora \
  --set lora_rank=1 --set lora_alpha=1
python3 bench/format_difffit_bench.py "$out"/{full,difffit,bitfit,lora,lora_r1}/metrics.json
