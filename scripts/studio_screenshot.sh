#!/usr/bin/env bash
# Regenerates the README's screenshot of atelier-studio with a scripted session under Xvfb.
#   scripts/studio_screenshot.sh [BASE_MODEL]   (default: assets/models/dit_shapes.safetensors)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=$(realpath "${1:-assets/models/dit_shapes.safetensors}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
xvfb-run -a -s "-screen 0 1280x800x24" "$ROOT/build/studio/gui/atelier-studio" \
  --script "$ROOT/docs/studio/screenshot.studio" --screenshot-dir "$WORK/shots" --config-dir "$WORK/config" \
  --var base_model="$BASE"
cp "$WORK/shots/studio.png" "$ROOT/docs/images/studio.png"
echo "wrote docs/images/studio.png"
