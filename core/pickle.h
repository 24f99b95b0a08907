// Restricted unpickler for torch.save checkpoints. It never executes anything: globals are recorded by
// name, REDUCE/BUILD on them produce opaque Object values, and only the handful of constructors a
// checkpoint needs (OrderedDict, torch._utils._rebuild_tensor_v2/_v3, _rebuild_parameter, ...) are
// interpreted by the caller (core/torch_zip.cpp). Torch-free so the fuzz targets build quickly.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace atelier::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { None, Bool, Int, Float, String, Bytes, List, Tuple, Dict, Global, Object, Custom };
  Kind kind = Kind::None;
  bool b = false;
  std::int64_t i = 0;
  double f = 0.0;
  std::string s;                                    // String, Bytes; Global/Object: "module.name"; Custom: type tag
  std::vector<ValuePtr> items;                      // List, Tuple; Object: constructor args
  std::vector<std::pair<ValuePtr, ValuePtr>> dict;  // Dict (insertion order kept)
  ValuePtr state;                                   // Object: BUILD state (e.g. a Namespace's dict)
  std::shared_ptr<void> custom;                     // Custom: payload made by a Hooks callback

  bool is(Kind k) const { return kind == k; }
  // Dict lookup by string key; nullptr when absent or when this is not a Dict.
  ValuePtr get(std::string_view key) const;
  // Short human-readable rendering (for `atelier inspect` and error messages).
  std::string repr(std::size_t max_len = 200) const;
};

ValuePtr make_none();
ValuePtr make_int(std::int64_t v);
ValuePtr make_string(std::string v);

// Callbacks that give meaning to persistent ids and to calls of known globals.
struct Hooks {
  // BINPERSID/PERSID: called with the persistent id tuple; returns the value to push.
  std::function<ValuePtr(const ValuePtr& pid)> persistent_load;
  // REDUCE/NEWOBJ on a Global "module.name" with args. Return nullptr to fall back to an opaque Object.
  std::function<ValuePtr(const std::string& global, const std::vector<ValuePtr>& args)> reduce;
};

struct Limits {
  std::size_t max_depth = 1000;          // nesting of containers / MARK stack
  std::size_t max_stack = 1u << 20;      // values on the stack
  std::size_t max_memo = 1u << 24;       // memo entries
  std::size_t max_container = 1u << 26;  // items in one container
};

// Parses a pickle (protocols 0-5 opcodes used by torch.save; see methods notes). Throws Error with the
// opcode name/byte offset for truncated data, unsupported opcodes, bad memo references, or limits hit
// (including a result nested deeper than max_depth). Reference cycles in the result are cut: the
// back-reference becomes None, so the tree can be walked and freed without recursion bombs.
ValuePtr unpickle(std::string_view data, const Hooks& hooks = {}, const Limits& limits = {});

}  // namespace atelier::pickle
