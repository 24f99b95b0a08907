#!/usr/bin/env bash
# Packs a built `atelier` CLI with the Debian shared libraries it links (OpenCV, ICU, ONNX, protobuf, ...)
# into one archive, for a machine that has LibTorch (a Python torch of the same version) but no apt, such
# as a GPU node of a cluster. LibTorch, the CUDA/NVIDIA libraries and the C/C++ runtime are left out: the
# target machine's own are used.
#   scripts/bundle_cli.sh [BUILD_DIR] [ARCHIVE]     (defaults: build-cuda, BUILD_DIR/atelier-cli.tar.xz)
# On the target:
#   mkdir -p /opt/atelier && tar -xJf atelier-cli.tar.xz -C /opt/atelier
#   TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
#   LD_LIBRARY_PATH=/opt/atelier/lib:$TORCH_LIB /opt/atelier/bin/atelier run JOB
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
archive=${2:-$build/atelier-cli.tar.xz}
bin=$build/studio/cli/atelier
[ -x "$bin" ] || { echo "scripts/bundle_cli.sh: $bin is not built" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$bin" "$stage/bin/"
# Every library the loader resolves here, except LibTorch's folder, NVIDIA's wheels and the C/C++ runtime.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  case "$lib" in
    */site-packages/*|*/cuda/*|*/cuda-[0-9]*/*) continue ;;
  esac
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libstdc++.so*|libgcc_s.so*|ld-linux*|libcuda.so*) continue ;;
  esac
  cp -L "$lib" "$stage/lib/"
done
if ldd "$bin" | grep -q "not found"; then
  echo "scripts/bundle_cli.sh: $bin has unresolved libraries here:" >&2
  ldd "$bin" | grep "not found" >&2
fi
mkdir -p "$(dirname "$archive")"
tar -C "$stage" -cf - bin lib | xz -T0 -6 > "$archive.tmp"
mv "$archive.tmp" "$archive"
echo "$archive: $(du -h "$archive" | cut -f1), $(ls "$stage/lib" | wc -l) libraries"
