#!/usr/bin/env bash
# The test command: sets up a fresh Debian machine if needed (scripts/setup.sh), builds, then runs the
# whole suite through ctest: Catch2 cases, the clang-format check and a short fuzz smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir "${ATELIER_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 900 "$@"
