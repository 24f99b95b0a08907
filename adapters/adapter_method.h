// What an adapter file's `adapter.method` says it trained. Torch-free: the app's panels read it from the
// file header. Names are the file format's strings; code compares the enum.
#pragma once
#include "core/config.h"

namespace atelier {

enum class AdapterMethod { DiffFit, BitFit, Full, LoRA, OrthoLoRA };

inline const EnumNames<AdapterMethod>& enum_names(AdapterMethod) {
  static const EnumNames<AdapterMethod> names = {{AdapterMethod::DiffFit, "difffit"},
                                                 {AdapterMethod::BitFit, "bitfit"},
                                                 {AdapterMethod::Full, "full"},
                                                 {AdapterMethod::LoRA, "lora"},
                                                 {AdapterMethod::OrthoLoRA, "ortho_lora"}};
  return names;
}

// Adapters that carry LoRA factors (and, from the concept jobs, a concept token).
inline bool carries_lora(AdapterMethod m) {
  return m == AdapterMethod::LoRA || m == AdapterMethod::OrthoLoRA;
}

}  // namespace atelier
