#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz (a CMake project of its own, no LibTorch; clang with ASan/UBSan):
#
#   scripts/fuzz_smoke.sh build          configure + build them into build-fuzz/ (scripts/setup.sh does this
#                                        with the rest of the build, so the test suite compiles nothing)
#   scripts/fuzz_smoke.sh run [RUNS]     run each built target on RUNS inputs (default 20000), starting
#                                        from its seed corpus; fails on any crash, sanitizer report, leak,
#                                        timeout or out-of-memory (the smoke run of the test suite)
#   scripts/fuzz_smoke.sh run 0 SECONDS  run each target for SECONDS instead (longer local fuzzing)
#
# The work of a run is a number of inputs, not a time, so it does not depend on the machine's speed. New
# inputs go to build-fuzz/work/<target>/corpus (the committed seeds are only read); reproducers to
# .../artifacts/. Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev).
# env: FUZZ_BUILD_DIR (build-fuzz), FUZZ_CXX (clang++), FUZZ_JOBS (nproc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=(fuzz_safetensors_header fuzz_pickle fuzz_zip_directory fuzz_job_json fuzz_image_decode)
mode=${1:-run}

if [ "$mode" = build ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$root/tests/fuzz" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="${FUZZ_CXX:-clang++}" >/dev/null
  cmake --build "$build" -j "${FUZZ_JOBS:-$(nproc)}"
  exit 0
fi
[ "$mode" = run ] || { echo "usage: $0 build | run [RUNS [SECONDS]]" >&2; exit 2; }
runs=${2:-20000}
seconds=${3:-0}

status=0
for target in "${targets[@]}"; do
  if [ ! -x "$build/$target" ]; then
    echo "[fuzz] $target: not built; run scripts/setup.sh (or scripts/fuzz_smoke.sh build) first"
    status=1
    continue
  fi
  work=$build/work/$target
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  budget=(-runs="$runs")
  [ "$seconds" -gt 0 ] && budget=(-max_total_time="$seconds")
  start=$(date +%s)
  if "$build/$target" "${budget[@]}" -seed=1 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" "$root/tests/fuzz/corpus/$target" >"$work/log.txt" 2>&1; then
    done_runs=$(grep -Eo 'number_of_executed_units: *[0-9]+' "$work/log.txt" | grep -Eo '[0-9]+$' || echo "?")
    echo "[fuzz] $target: ok, $done_runs inputs in $(( $(date +%s) - start )) s, no crash"
  else
    status=1
    echo "[fuzz] $target: FAILED; log $work/log.txt; reproducers: $(ls "$work/artifacts" | tr '\n' ' ')"
    tail -n 40 "$work/log.txt"
  fi
done
exit $status
