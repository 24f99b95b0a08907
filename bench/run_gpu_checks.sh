#!/usr/bin/env bash
# Data-parallel checks of a build under torchrun, and on a machine with NVIDIA GPUs (a CUDA build) the GPU
# checks and figures. Needs the torch wheel's Python (for torchrun and for comparing weights). Each check
# prints PASS or FAIL into a markdown report.
#   ATELIER_BIN=build-cuda/studio/cli/atelier bench/run_gpu_checks.sh [OUT] [STEPS]
# (defaults: bench-runs/gpu-<date>, 200 timed steps). A build moved from another machine runs with
# scripts/bundle_cli.sh's archive and LD_LIBRARY_PATH (see there).
#
# Checks, on train_base (the shipped DiT-T/4 recipe, 40 steps at batch 16, checkpoints every 20):
#   gloo-2-cpu  2 torchrun processes on the CPU: the weights of 1 process.
#   resume      that run SIGKILLed after a checkpoint resumes under torchrun to the uninterrupted weights.
# With a GPU:
#   nccl-1      torchrun's single process on the GPU goes through NCCL (broadcast, bucketed gradient
#               all-reduce in backward's hooks) and ends with the weights of a plain run.
#   gloo-2-gpu  2 torchrun processes sharing the GPU, CUDA tensors through Gloo: the weights of 1 process.
#   nccl-2-gpu  2 processes on one GPU with NCCL (which takes a device per process): one clear error, no hang.
# Figures (with a GPU): steps/s on the GPU for base.json (batch 64), difffit.json (DiffFit and full fine-tuning).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${ATELIER_BIN:-build-cuda/studio/cli/atelier}
out=${1:-bench-runs/gpu-$(date +%Y%m%d-%H%M%S)}
steps=${2:-200}
mkdir -p "$out"
report=$out/report.md
failures=0
note() { echo "$*" | tee -a "$report"; }
verdict() {  # name, exit status of the check
  if [ "$2" = 0 ]; then note "- PASS $1"; else note "- FAIL $1"; failures=$((failures + 1)); fi
}
compare_weights() {  # a.safetensors b.safetensors tolerance: max |a-b| / max |a| per tensor
  python3 - "$@" <<'EOF'
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
worst = max(((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12)).item() for k in a)
print(f"  - max relative difference {worst:.2e} over {len(a)} tensors (tolerance {sys.argv[3]})")
sys.exit(0 if set(a) == set(b) and worst <= float(sys.argv[3]) else 1)
EOF
}
same_weights() { compare_weights "$@" | tee -a "$report"; }

gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
note "# Data-parallel checks ($(date -u +%Y-%m-%d))"
note ""
note "- GPU: $( [ "$gpus" -gt 0 ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1 || echo none: the CPU checks only)"
note "- torch (for torchrun): $(python3 -c 'import torch; print(torch.__version__)')"
note ""
job=(assets/jobs/base.json --set steps=40 --set batch=16 --set checkpoint_every=20 --set val_every=100000)
run() { "$bin" run -q "${job[@]}" "$@"; }
launch() { python3 -m torch.distributed.run --no-python --standalone --nproc-per-node "$@"; }

run --set device=cpu --run-dir "$out/one-cpu"
launch 2 "$bin" run -q "${job[@]}" --set device=cpu --run-dir "$out/gloo-2-cpu" > "$out/gloo-2-cpu.log" 2>&1
same_weights "$out/one-cpu/model.safetensors" "$out/gloo-2-cpu/model.safetensors" 1e-3
verdict "gloo-2-cpu: 2 CPU processes under torchrun, through Gloo = 1 process" $?
# Killed after its first checkpoint, then resumed by torchrun: the weights of the uninterrupted run.
launch 2 "$bin" run -q "${job[@]}" --set device=cpu --run-dir "$out/resume" \
  > "$out/resume-1.log" 2>&1 &
launcher=$!
for _ in $(seq 600); do ls "$out/resume/checkpoints" > /dev/null 2>&1 && break; sleep 0.1; done
pkill -KILL -f "run-dir $out/resume" ; wait $launcher
launch 2 "$bin" run -q "${job[@]}" --set device=cpu --run-dir "$out/resume" --resume \
  > "$out/resume-2.log" 2>&1
same_weights "$out/gloo-2-cpu/model.safetensors" "$out/resume/model.safetensors" 1e-3
verdict "resume: a killed 2-process torchrun run resumes to the uninterrupted weights" $?
if [ "$gpus" = 0 ]; then
  note ""
  note "$failures check(s) failed"
  exit $((failures > 0))
fi
run --set device=cuda --run-dir "$out/one-gpu"
launch 1 "$bin" run -q "${job[@]}" --set device=cuda --run-dir "$out/nccl-1" > "$out/nccl-1.log" 2>&1
grep -h -o 'gradients all-reduced[^"]*' "$out/nccl-1/log.jsonl" | head -1 | sed 's/^/  - /' | tee -a "$report"
grep -q "(nccl)" "$out/nccl-1/log.jsonl" && same_weights "$out/one-gpu/model.safetensors" "$out/nccl-1/model.safetensors" 1e-3
verdict "nccl-1: torchrun's one process through NCCL = a plain run" $?
ATELIER_DIST_BACKEND=gloo launch 2 "$bin" run -q "${job[@]}" --set device=cuda --run-dir "$out/gloo-2-gpu" \
  > "$out/gloo-2-gpu.log" 2>&1
same_weights "$out/one-gpu/model.safetensors" "$out/gloo-2-gpu/model.safetensors" 1e-3
verdict "gloo-2-gpu: 2 processes sharing the GPU through Gloo = 1 process" $?
if [ "$gpus" -lt 2 ]; then
  start=$(date +%s)
  timeout 300 "$bin" run -q "${job[@]}" --set device=cuda --run-dir "$out/nccl-2-gpu" --nproc 2 \
    > "$out/nccl-2-gpu.log" 2>&1
  status=$?
  note "  exit $status after $(( $(date +%s) - start )) s: $(grep -h -m1 "NCCL takes one device" "$out/nccl-2-gpu.log" | cut -c1-200)"
  [ "$status" != 0 ] && [ "$status" != 124 ] && grep -q "NCCL takes one device" "$out/nccl-2-gpu.log"
  verdict "nccl-2-gpu: 2 processes on one GPU with NCCL end with one clear error" $?
fi

note ""
note "## Training speed on the GPU ($steps steps after the first, one process)"
note ""
timed=(--set "steps=$steps" --set checkpoint_every=100000 --set sample_every=100000 --set device=cuda)
"$bin" run -q assets/jobs/base.json --run-dir "$out/speed-base" "${timed[@]}" --set val_every=100000
for method in difffit full; do
  lr=(); [ "$method" = full ] && lr=(--set lr=0.0001)
  "$bin" run -q assets/jobs/difffit.json --run-dir "$out/speed-$method" "${timed[@]}" "${lr[@]}" \
    --set "method=$method" --set eval_per_class=2 --set reference_samples=16
done
python3 - "$out" <<'EOF' | tee -a "$report"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| job | steps/s | batch |")
print("|---|---|---|")
for name, batch in (("base", 64), ("difffit", 32), ("full", 32)):
    events = [json.loads(l) for l in (out / f"speed-{name}" / "log.jsonl").read_text().splitlines() if l.strip()]
    train = [e for e in events if e.get("type") == "progress" and e.get("phase") == "train"]
    rate = (train[-1]["step"] - train[0]["step"]) / max(1e-9, train[-1]["time"] - train[0]["time"])
    print(f"| {name} | {rate:.1f} | {batch} |")
EOF
note ""
note "$failures check(s) failed"
exit $((failures > 0))
