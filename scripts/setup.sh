#!/usr/bin/env bash
# One-stop set-up for a fresh Debian (bookworm) machine, used by both README commands.
#   scripts/setup.sh            install packages + LibTorch, configure and build (Release, GUI on)
# Environment knobs:
#   ATELIER_GUI=OFF             headless build (no ImGui/GLFW/Xvfb packages)
#   ATELIER_BUILD_DIR=build     build folder
#   ATELIER_CUDA=ON             CUDA build (a machine with an NVIDIA driver and the CUDA toolkit): the torch
#                               wheel with its CUDA runtime wheels (NCCL among them), -DATELIER_TORCH_CUDA=ON
# LibTorch comes only from the pinned PyPI torch wheel (TORCH_VERSION), installed into a project-local .venv.
# Debian's libtorch-dev 1.13 is not supported (the engine uses the 2.x API, the test fixtures 2.x dtypes):
# ATELIER_TORCH set to anything but `wheel` is an error.
# Idempotent: packages already present are skipped and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GUI=${ATELIER_GUI:-ON}
CUDA=${ATELIER_CUDA:-OFF}
BUILD_DIR=${ATELIER_BUILD_DIR:-build}
TORCH_VERSION=2.11.0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ "${ATELIER_TORCH:-wheel}" != wheel ]; then
  echo "scripts/setup.sh: ATELIER_TORCH=$ATELIER_TORCH is no longer supported: LibTorch comes from the pinned torch wheel" >&2
  exit 1
fi

log() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages ---------------------------------------------------------------------------
pkgs=(build-essential cmake ninja-build pkg-config ccache clang-format clang libclang-rt-14-dev python3 python3-venv
      libopencv-core-dev libopencv-imgproc-dev libstb-dev nlohmann-json3-dev catch2 libcli11-dev libssl-dev
      libonnx-dev libprotobuf-dev libicu-dev zlib1g-dev libgloo-dev)
[ "$GUI" = ON ] && pkgs+=(libimgui-dev libglfw3-dev libgl-dev xvfb xauth fonts-dejavu-core
                         libgl1-mesa-dri libglx-mesa0)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- LibTorch ----------------------------------------------------------------------------------
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DATELIER_GUI="$GUI")
command -v ccache >/dev/null && cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# The wheel's LibTorch (headers, libtorch_cpu, c10) is all a CPU build links; its CUDA runtime
# wheels are only needed by CUDA builds and Python, so they are not installed (--no-deps).
PY=${ATELIER_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if [ "$CUDA" = ON ]; then
  if ! .venv/bin/pip show nvidia-nccl-cu13 >/dev/null 2>&1; then
    log "installing torch==$TORCH_VERSION with its CUDA runtime wheels"
    .venv/bin/pip install -q "torch==$TORCH_VERSION"
  fi
  # TorchConfig would otherwise compile and run a probe for the GPU's architecture.
  cmake_args+=(-DATELIER_TORCH_CUDA=ON "-DTORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}")
else
  if ! .venv/bin/pip show torch 2>/dev/null | grep -q "^Version: $TORCH_VERSION"; then
    log "installing torch==$TORCH_VERSION (LibTorch only, no CUDA runtime wheels)"
    .venv/bin/pip install -q --no-deps "torch==$TORCH_VERSION"
  fi
  # libtorch_cpu.so itself needs two small CUDA runtime libraries (cudart, cupti) to load.
  if ! .venv/bin/pip show nvidia-cuda-runtime nvidia-cuda-cupti >/dev/null 2>&1; then
    .venv/bin/pip install -q --no-deps "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*"
  fi
fi
TORCH_ROOT=$(.venv/bin/python - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torch")
print(pathlib.Path(spec.origin).parent)
PY
)
cmake_args+=(-DATELIER_TORCH_ROOT="$TORCH_ROOT")
# The runtimes the export_gan job checks its ONNX / ncnn exports with (.venv-parity).
scripts/parity_venv.sh

# ---- Configure and build -----------------------------------------------------------------------
cmake -S . -B "$BUILD_DIR" "${cmake_args[@]}" ${ATELIER_CMAKE_ARGS:-} > "$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
log "building in $BUILD_DIR"
cmake --build "$BUILD_DIR" -j "$(nproc)"
# The fuzz targets (clang, ASan/UBSan) are built here too, so the test suite only runs them.
if command -v clang++ >/dev/null; then
  log "building the fuzz targets in ${FUZZ_BUILD_DIR:-build-fuzz}"
  scripts/fuzz_smoke.sh build
fi
