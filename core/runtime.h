// Process-wide LibTorch settings. LibTorch starts with one intra-op thread on some VMs: every entry
// point calls configure_threads() (0 = all cores).
#pragma once

namespace atelier {
int configure_threads(int threads = 0);  // returns the thread count in use
}
