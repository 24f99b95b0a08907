#!/usr/bin/env bash
# Regenerates the docs' screenshots of atelier-studio with a scripted session under Xvfb, from an empty
# workspace and no saved settings, at the smallest supported window, a laptop's and a 1440p monitor's:
#   docs/images/studio-<W>x<H>-generate.png and studio-<W>x<H>-train.png; docs/images/studio.png (1280x800).
#   scripts/studio_screenshot.sh [SIZES...]   (default: 1024x700 1280x800 2560x1440)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1024x700 1280x800 2560x1440)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for size in "${SIZES[@]}"; do
  mkdir -p "$WORK/$size/ws"
  (cd "$WORK/$size/ws" && xvfb-run -a -s "-screen 0 ${size}x24" "$ROOT/build/studio/gui/atelier-studio" --size "$size" \
    --script "$ROOT/docs/studio/screenshot.studio" --screenshot-dir "$WORK/$size/shots" --config-dir "$WORK/$size/config")
  for shot in generate train; do
    cp "$WORK/$size/shots/$shot.png" "$ROOT/docs/images/studio-$size-$shot.png"
    echo "wrote docs/images/studio-$size-$shot.png"
  done
  if [ "$size" = 1280x800 ]; then cp "$WORK/$size/shots/train.png" "$ROOT/docs/images/studio.png"; fi
done
