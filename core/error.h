// Error type of the engine. Engine code throws with context (the file, key, field or value at fault);
// the job runner / CLI / GUI catch once at their boundary and show the message as one line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace atelier {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates the parts with operator<< and throws Error: fail("file ", path, ": bad header").
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

// Prefixes an in-flight Error with context ("reading x.safetensors: ...") and rethrows it.
template <class F, class... Parts>
decltype(auto) with_context(F&& f, Parts&&... parts) {
  try {
    return f();
  } catch (const Error& e) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw Error(os.str() + ": " + e.what());
  }
}

}  // namespace atelier
