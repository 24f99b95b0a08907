#!/usr/bin/env bash
# Orthogonal vs plain LoRA concepts, merged 5-way, on the embedded default, in one invocation: each of
# the five Shapes concept glyphs is trained independently on the shipped base model once with ortho_lora
# (its own basis slot) and once with plain lora (same rank, steps, data, seed); then all five of each kind
# are merged (lambda 0.6) and every concept's identity is measured alone and merged.
#   bench/run_concept_bench.sh [STEPS] [BASE]      (defaults: 300, assets/models/dit_shapes.safetensors)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
base=${2:-assets/models/dit_shapes.safetensors}
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=bench-runs/concepts-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
glyphs=(spiral bolt key moon eye)
for kind in ortho_lora lora; do
  adapters=()
  for slot in 0 1 2 3 4; do
    g=${glyphs[$slot]}
    echo "== $kind $g" >&2
    "$bin" run -q assets/jobs/ortho_concept.json --run-dir "$out/$kind-$g" --set "kind=$kind" --set "base=$base" \
      --set "glyph=$g" --set "ortho_slot=$slot" --set "rank=${RANK:-20}" --set "alpha=${RANK:-20}" --set "steps=$steps" --set sample_every=100000 \
      --set checkpoint_every=100000 --set eval_samples=${EVAL:-32}
    adapters+=("\"$out/$kind-$g/adapter.safetensors\"")
  done
  list=$(IFS=,; echo "[${adapters[*]}]")
  printf '{"kind": "merge", "base": "%s", "adapters": %s, "eval_samples": %s}\n' "$base" "$list" "${EVAL:-32}" > "$out/merge-$kind.json"
  echo "== merge $kind" >&2
  "$bin" run -q "$out/merge-$kind.json" --run-dir "$out/merge-$kind"
done
python3 bench/format_concept_bench.py "$out"
