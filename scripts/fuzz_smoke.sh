#!/usr/bin/env bash
# Fuzz smoke test: builds the libFuzzer targets of tests/fuzz (a CMake project of its own, no LibTorch
# needed) with clang into build-fuzz/, then runs each for a few seconds on its seed corpus. Fails on
# any crash, sanitizer report (ASan/UBSan), leak, timeout or out-of-memory. New inputs go to
# build-fuzz/work/<target>/corpus (the committed seeds are only read); reproducers to .../artifacts/.
# Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev).
#
#   scripts/fuzz_smoke.sh [SECONDS]       default 20 per target
#   env: FUZZ_BUILD_DIR (build-fuzz), FUZZ_CXX (clang++), FUZZ_JOBS (1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${1:-20}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root/tests/fuzz" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="${FUZZ_CXX:-clang++}" >/dev/null
cmake --build "$build" -j "${FUZZ_JOBS:-1}"

status=0
for target in fuzz_safetensors_header fuzz_pickle fuzz_zip_directory; do
  if [ ! -x "$build/$target" ]; then
    echo "[fuzz] $target: not built (see the cmake message), skipped"
    continue
  fi
  work=$build/work/$target
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if "$build/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" "$root/tests/fuzz/corpus/$target" >"$work/log.txt" 2>&1; then
    runs=$(grep -Eo 'number_of_executed_units: *[0-9]+' "$work/log.txt" | grep -Eo '[0-9]+$' || echo "?")
    echo "[fuzz] $target: ok, $runs inputs in ${seconds}s"
  else
    status=1
    echo "[fuzz] $target: FAILED; log $work/log.txt; reproducers: $(ls "$work/artifacts" | tr '\n' ' ')"
    tail -n 40 "$work/log.txt"
  fi
done
exit $status
