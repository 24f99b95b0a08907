// Guards for the few LibTorch APIs newer than Debian's libtorch-dev 1.13 (the documented fallback).
#pragma once
#include <torch/version.h>

#define ATELIER_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
