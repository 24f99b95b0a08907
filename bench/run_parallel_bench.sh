#!/usr/bin/env bash
# Data-parallel training on this machine: steps/s of the shipped base recipe (train_base, DiT-T/4 at 32 px,
# batch 64) and of DiffFit vs full fine-tuning on the shipped base (difffit.json, batch 32), each with 1 and
# 2 local processes (`atelier run --nproc`), and the gradient volume each step all-reduces (from the log).
#   bench/run_parallel_bench.sh [STEPS]      (default: 60)
# Writes runs under bench-runs/parallel-<date>/ and prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
bin=${ATELIER_BUILD_DIR:-build}/studio/cli/atelier
out=bench-runs/parallel-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
quiet=(--set "steps=$steps" --set checkpoint_every=100000 --set sample_every=100000)
for n in 1 2; do
  echo "== train_base, $n process(es)" >&2
  "$bin" run -q assets/jobs/base.json --run-dir "$out/base-$n" "${quiet[@]}" --set val_every=100000 --nproc "$n"
  for method in difffit full; do
    echo "== difffit.json method=$method, $n process(es)" >&2
    lr=(); [ "$method" = full ] && lr=(--set lr=0.0001)
    "$bin" run -q assets/jobs/difffit.json --run-dir "$out/$method-$n" "${quiet[@]}" "${lr[@]}" \
      --set "method=$method" --set eval_per_class=2 --set reference_samples=16 --nproc "$n"
  done
done
python3 - "$out" <<'EOF'
import json, re, sys
from pathlib import Path

def figures(run):
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [e for e in events if e.get("type") == "progress" and e.get("phase") == "train"]
    rate = (train[-1]["step"] - train[0]["step"]) / max(1e-9, train[-1]["time"] - train[0]["time"])
    volume = "-"
    for e in events:
        m = re.search(r"all-reduced per step: ([0-9.]+ MB)", e.get("message", ""))
        if m:
            volume = m.group(1)
    return rate, volume

out = Path(sys.argv[1])
print("| job | 1 process steps/s | 2 processes steps/s | speed-up | all-reduce per step |")
print("|---|---|---|---|---|")
for job in ("base", "difffit", "full"):
    one, _ = figures(out / f"{job}-1")
    two, volume = figures(out / f"{job}-2")
    print(f"| {job} | {one:.2f} | {two:.2f} | {two / one:.2f}x | {volume} |")
EOF
