#!/usr/bin/env bash
# Installs the build into a temporary prefix and runs the installed `atelier` from an empty folder: the
# example job's relative model and probe paths must resolve to the installed share/atelier/assets.
#   scripts/install_check.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: install_check.sh BUILD_DIR}" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
mkdir "$TMP/empty"
cd "$TMP/empty"
"$TMP/prefix/bin/atelier" run -q "$TMP/prefix/share/atelier/assets/jobs/sample.json" --set per_class=1 \
  --set steps=2 --set reference_samples=16 --run-dir run
test -s run/samples.png || { echo "install_check: run/samples.png was not written" >&2; exit 1; }
grep -q "$TMP/prefix/share/atelier/assets/models/dit_shapes.safetensors" run/config.json ||
  { echo "install_check: the model was not resolved to the installed assets:" >&2; cat run/config.json >&2; exit 1; }
echo "install_check: the installed atelier found its shipped models from an empty folder"
