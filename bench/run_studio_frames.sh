#!/usr/bin/env bash
# Frame times of atelier-studio while a job trains: runs the GUI smoke script (tests/studio/smoke.studio)
# under Xvfb exactly as tests/test_studio.cpp does and prints the frame figures of its report.json.
#   bench/run_studio_frames.sh        (needs a GUI build: build/studio/gui/atelier-studio, and xvfb-run)
# Writes the session under bench-runs/studio-frames-<date>/ (report.json and screenshots in shots/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
build=${ATELIER_BUILD_DIR:-build}
cli=$ROOT/$build/studio/cli/atelier
studio=$ROOT/$build/studio/gui/atelier-studio
out=$ROOT/bench-runs/studio-frames-$(date +%Y%m%d-%H%M%S)
[ -x "$studio" ] || { echo "bench/run_studio_frames.sh: $studio is missing (a GUI build: scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$out/ws" "$out/empty/nothing-here"

# The script's fixtures, as in the test: an adapter trained on another (tiny) base model, a folder without images.
cat > "$out/other_base.json" <<'JSON'
{"kind": "train_base", "model": "DiT-T/4", "hidden_size": 32, "depth": 2, "num_heads": 2, "image_size": 16,
 "steps": 2, "batch": 4, "warmup": 1, "sample_steps": 2, "val_every": 1000, "sample_every": 1000, "seed": 7,
 "classes": ["circle", "square"]}
JSON
cat > "$out/other.json" <<JSON
{"kind": "difffit", "base": "$out/other_base/model.safetensors", "method": "difffit", "classes": ["circle", "square"],
 "styles": ["night"], "steps": 4, "batch": 4, "checkpoint_every": 2, "sample_every": 1000, "sample_steps": 2,
 "eval_per_class": 2, "reference_samples": 16, "probe": "$ROOT/assets/models/probe.safetensors"}
JSON
"$cli" run -q "$out/other_base.json" --run-dir "$out/other_base"
"$cli" run -q "$out/other.json" --run-dir "$out/other"

echo "== atelier-studio smoke script under Xvfb (a few minutes)" >&2
(cd "$out/ws" && xvfb-run -a -s '-screen 0 1280x800x24' "$studio" --script "$ROOT/tests/studio/smoke.studio" \
  --screenshot-dir "$out/shots" --config-dir "$out/config" --var other_adapter="$out/other/adapter.safetensors" \
  --var empty_folder="$out/empty" > "$out/studio.log" 2>&1) || { tail -n 20 "$out/studio.log" >&2; exit 1; }

python3 - "$out/shots/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if not r["ok"]:
    print(f"warning: the smoke script failed: {r['error']}", file=sys.stderr)
print(f"while a job trained: longest frame {r['max_frame_ms_training']:.1f} ms, "
      f"mean {r['mean_frame_ms_training']:.1f} ms over {r['training_frames']} frames")
slow = len(r["slow_frames"])  # the report keeps the first 100
print(f"whole session: longest frame {r['max_frame_ms']:.1f} ms over {r['frames']} frames, "
      f"{slow}{'+' if slow >= 100 else ''} frames over 50 ms")
PY
