#include "core/pickle.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace atelier::pickle {
namespace {

using Kind = Value::Kind;

ValuePtr make(Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

bool has_children(const Value& v) {
  return v.is(Kind::List) || v.is(Kind::Tuple) || v.is(Kind::Dict) || v.is(Kind::Object);
}

const char* opcode_name(std::uint8_t op) {
  // clang-format off
  static constexpr std::pair<std::uint8_t, const char*> kNames[] = {
      {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"}, {'F', "FLOAT"}, {'I', "INT"},
      {'J', "BININT"}, {'K', "BININT1"}, {'L', "LONG"}, {'M', "BININT2"}, {'N', "NONE"}, {'P', "PERSID"},
      {'Q', "BINPERSID"}, {'R', "REDUCE"}, {'S', "STRING"}, {'T', "BINSTRING"}, {'U', "SHORT_BINSTRING"},
      {'V', "UNICODE"}, {'X', "BINUNICODE"}, {'a', "APPEND"}, {'b', "BUILD"}, {'c', "GLOBAL"}, {'d', "DICT"},
      {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"}, {'i', "INST"}, {'j', "LONG_BINGET"},
      {'l', "LIST"}, {']', "EMPTY_LIST"}, {'o', "OBJ"}, {'p', "PUT"}, {'q', "BINPUT"}, {'r', "LONG_BINPUT"},
      {'s', "SETITEM"}, {'t', "TUPLE"}, {')', "EMPTY_TUPLE"}, {'u', "SETITEMS"}, {'G', "BINFLOAT"}, {'B', "BINBYTES"},
      {'C', "SHORT_BINBYTES"}, {0x80, "PROTO"}, {0x81, "NEWOBJ"}, {0x82, "EXT1"}, {0x83, "EXT2"}, {0x84, "EXT4"},
      {0x85, "TUPLE1"}, {0x86, "TUPLE2"}, {0x87, "TUPLE3"}, {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {0x8a, "LONG1"},
      {0x8b, "LONG4"}, {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"}, {0x8f, "EMPTY_SET"},
      {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"}, {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"},
      {0x95, "FRAME"}, {0x96, "BYTEARRAY8"}, {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
  };
  // clang-format on
  for (const auto& [code, name] : kNames)
    if (code == op) return name;
  return "unknown";
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | ((cp >> 18) & 0x07));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Unpickler {
 public:
  Unpickler(std::string_view data, const Hooks& hooks, const Limits& limits)
      : d_(data), hooks_(hooks), limits_(limits) {}

  ValuePtr run() {
    try {
      ValuePtr result = parse();
      stack_.clear();
      memo_.clear();
      std::unordered_set<const Value*> reachable;
      check_tree(result, reachable);
      release(&reachable);
      return result;
    } catch (...) {
      release(nullptr);
      throw;
    }
  }

 private:
  std::string_view d_;
  const Hooks& hooks_;
  const Limits& limits_;
  std::size_t pos_ = 0;
  std::size_t op_pos_ = 0;
  std::uint8_t op_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<std::size_t> marks_;  // stack sizes at each MARK
  std::unordered_map<std::uint64_t, ValuePtr> memo_;
  // Every container made here. Teardown clears their children first, so freeing a deep or cyclic
  // graph never recurses or leaks.
  std::vector<ValuePtr> arena_;

  [[noreturn]] void error(const std::string& what) const {
    fail("pickle ", opcode_name(op_), " at byte ", op_pos_, ": ", what);
  }

  // --- input ---
  std::string_view take(std::uint64_t n) {
    if (n > d_.size() - pos_)
      error("truncated: needs " + std::to_string(n) + " bytes, " + std::to_string(d_.size() - pos_) + " left");
    std::string_view s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::uint64_t le(int n) {
    std::string_view s = take(n);
    std::uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<std::uint8_t>(s[k]);
    return v;
  }
  std::string_view line() {
    std::size_t nl = d_.find('\n', pos_);
    if (nl == std::string_view::npos) error("truncated: missing end of line");
    std::string_view s = d_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return s;
  }
  std::int64_t parse_int(std::string_view s) {
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
      error("bad or out-of-range integer '" + std::string(s.substr(0, 40)) + "'");
    return v;
  }

  // --- stack ---
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(ValuePtr v) {
    if (stack_.size() >= limits_.max_stack) error("stack larger than " + std::to_string(limits_.max_stack));
    stack_.push_back(std::move(v));
  }
  ValuePtr pop() {
    if (stack_.size() <= floor()) error("stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const ValuePtr& top() const {
    if (stack_.size() <= floor()) error("stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) error("MARK missing");
    std::size_t at = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + at), std::make_move_iterator(stack_.end()));
    stack_.resize(at);
    return items;
  }

  // --- values ---
  ValuePtr container(Kind k) {
    ValuePtr v = make(k);
    arena_.push_back(v);
    return v;
  }
  ValuePtr sequence(Kind k, std::vector<ValuePtr> items) {
    ValuePtr v = container(k);
    v->items = std::move(items);
    return v;
  }
  ValuePtr scalar(Kind k) { return make(k); }
  ValuePtr text(Kind k, std::string_view s) {
    ValuePtr v = make(k);
    v->s.assign(s);
    return v;
  }
  void check_room(std::size_t have, std::size_t add) {
    if (add > limits_.max_container || have > limits_.max_container - add)
      error("container larger than " + std::to_string(limits_.max_container) + " items");
  }
  void append(const ValuePtr& target, std::vector<ValuePtr> items) {
    if (!target->is(Kind::List) && !target->is(Kind::Object)) error("cannot append to " + target->repr(60));
    check_room(target->items.size(), items.size());
    for (auto& x : items) target->items.push_back(std::move(x));
  }
  void set_items(const ValuePtr& target, std::vector<ValuePtr> kv) {
    // Objects (dict subclasses) keep their entries in `dict`.
    if (!target->is(Kind::Dict) && !target->is(Kind::Object)) error("cannot set items on " + target->repr(60));
    if (kv.size() % 2 != 0) error("odd number of items for a dict");
    check_room(target->dict.size(), kv.size() / 2);
    for (std::size_t k = 0; k < kv.size(); k += 2) target->dict.emplace_back(std::move(kv[k]), std::move(kv[k + 1]));
  }
  void memo_put(std::uint64_t idx) {
    if (memo_.size() >= limits_.max_memo && !memo_.count(idx))
      error("memo larger than " + std::to_string(limits_.max_memo));
    memo_[idx] = top();
  }
  ValuePtr memo_get(std::uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) error("memo index " + std::to_string(idx) + " not defined");
    return it->second;
  }
  std::int64_t read_long(std::uint64_t n) {
    if (n > 8) error("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
    if (n == 0) return 0;
    std::uint64_t v = le(static_cast<int>(n));
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~std::uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<std::int64_t>(v);
  }
  ValuePtr persistent(const ValuePtr& pid) {
    if (!hooks_.persistent_load) error("persistent id " + pid->repr(80) + " without a handler");
    ValuePtr v = hooks_.persistent_load(pid);
    if (!v) error("persistent id " + pid->repr(80) + " not understood");
    if (has_children(*v)) arena_.push_back(v);
    return v;
  }
  // REDUCE / NEWOBJ: hooks first, then the few builtins with a data meaning, else an opaque Object.
  ValuePtr call(const ValuePtr& callable, const ValuePtr& args) {
    if (!args->is(Kind::Tuple)) error("arguments are not a tuple");
    const std::string& name = callable->is(Kind::Global) ? callable->s : std::string();
    if (!name.empty() && hooks_.reduce) {
      if (ValuePtr v = hooks_.reduce(name, args->items)) {
        if (has_children(*v)) arena_.push_back(v);
        return v;
      }
    }
    const ValuePtr* first = args->items.empty() ? nullptr : &args->items[0];
    bool seq_arg = first && ((*first)->is(Kind::List) || (*first)->is(Kind::Tuple));
    if (name == "collections.OrderedDict" || name == "builtins.dict") {
      ValuePtr d = container(Kind::Dict);
      if (seq_arg) {
        for (const auto& kv : (*first)->items)
          if (kv->is(Kind::Tuple) && kv->items.size() == 2) d->dict.emplace_back(kv->items[0], kv->items[1]);
      }
      return d;
    }
    if (name == "builtins.set" || name == "builtins.frozenset" || name == "__builtin__.set") {
      return sequence(Kind::List, seq_arg ? (*first)->items : std::vector<ValuePtr>{});
    }
    ValuePtr obj = container(Kind::Object);
    if ((name == "copyreg._reconstructor" || name == "copy_reg._reconstructor") && first &&
        (*first)->is(Kind::Global)) {
      obj->s = (*first)->s;  // protocol 0/1 object: _reconstructor(cls, base, state), then BUILD
      return obj;
    }
    obj->s = name.empty() ? "<call " + callable->repr(60) + ">" : name;
    obj->items = args->items;
    return obj;
  }
  void build(const ValuePtr& state) {
    const ValuePtr& obj = top();
    // On a Dict (OrderedDict) the state is the instance __dict__ (e.g. state_dict._metadata), not items.
    if (!obj->is(Kind::Object)) return;
    if (obj->state == state) return;
    if (obj->state && obj->state->is(Kind::Dict) && state->is(Kind::Dict)) {
      check_room(obj->state->dict.size(), state->dict.size());
      for (const auto& kv : state->dict) obj->state->dict.push_back(kv);
    } else {
      obj->state = state;
    }
  }

  ValuePtr parse() {
    while (pos_ < d_.size()) {
      op_pos_ = pos_;
      op_ = static_cast<std::uint8_t>(d_[pos_++]);
      switch (op_) {
        case 0x80: {  // PROTO
          std::uint64_t p = le(1);
          if (p > 5) error("unsupported protocol " + std::to_string(p));
          break;
        }
        case 0x95:  // FRAME: a length prefix only
          if (le(8) > d_.size() - pos_) error("truncated frame");
          break;
        case '.': return pop();  // STOP
        case '(':
          if (marks_.size() >= limits_.max_depth)
            error("MARKs nested deeper than " + std::to_string(limits_.max_depth));
          marks_.push_back(stack_.size());
          break;
        case '0':
          if (stack_.size() > floor())
            stack_.pop_back();
          else if (!marks_.empty())
            marks_.pop_back();
          else
            error("stack underflow");
          break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'N': push(scalar(Kind::None)); break;
        case 0x88:
        case 0x89: {
          ValuePtr v = scalar(Kind::Bool);
          v->b = op_ == 0x88;
          push(v);
          break;
        }
        case 'I': {  // protocol 0: "01"/"00" are True/False
          std::string_view s = line();
          ValuePtr v = scalar(s == "01" || s == "00" ? Kind::Bool : Kind::Int);
          if (v->is(Kind::Bool))
            v->b = s == "01";
          else
            v->i = parse_int(s);
          push(v);
          break;
        }
        case 'L': {
          std::string_view s = line();
          if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
          push(make_int(parse_int(s)));
          break;
        }
        case 'J': push(make_int(static_cast<std::int32_t>(le(4)))); break;
        case 'K': push(make_int(static_cast<std::int64_t>(le(1)))); break;
        case 'M': push(make_int(static_cast<std::int64_t>(le(2)))); break;
        case 0x8a: push(make_int(read_long(le(1)))); break;
        case 0x8b: {
          auto n = static_cast<std::int32_t>(le(4));
          if (n < 0) error("negative length");
          push(make_int(read_long(static_cast<std::uint64_t>(n))));
          break;
        }
        case 'F': {
          std::string_view s = line();
          ValuePtr v = scalar(Kind::Float);
          auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v->f);
          if (ec != std::errc() || end != s.data() + s.size())
            error("bad float '" + std::string(s.substr(0, 40)) + "'");
          push(v);
          break;
        }
        case 'G': {
          std::string_view s = take(8);
          std::uint64_t bits = 0;
          for (char c : s) bits = (bits << 8) | static_cast<std::uint8_t>(c);  // big-endian
          ValuePtr v = scalar(Kind::Float);
          v->f = std::bit_cast<double>(bits);
          push(v);
          break;
        }
        case 'S': push(text(Kind::String, unquote(line()))); break;
        case 'T': {
          auto n = static_cast<std::int32_t>(le(4));
          if (n < 0) error("negative length");
          push(text(Kind::String, take(static_cast<std::uint64_t>(n))));
          break;
        }
        case 'U': push(text(Kind::String, take(le(1)))); break;
        case 'V': push(text(Kind::String, raw_unicode_escape(line()))); break;
        case 'X': push(text(Kind::String, take(le(4)))); break;
        case 0x8c: push(text(Kind::String, take(le(1)))); break;
        case 0x8d: push(text(Kind::String, take(le(8)))); break;
        case 'B': push(text(Kind::Bytes, take(le(4)))); break;
        case 'C': push(text(Kind::Bytes, take(le(1)))); break;
        case 0x8e:
        case 0x96: push(text(Kind::Bytes, take(le(8)))); break;
        case ']': push(container(Kind::List)); break;
        case 0x8f: push(container(Kind::List)); break;  // EMPTY_SET: sets are Lists
        case 'l': push(sequence(Kind::List, pop_mark())); break;
        case 0x91: push(sequence(Kind::List, pop_mark())); break;  // FROZENSET
        case ')': push(container(Kind::Tuple)); break;
        case 't': push(sequence(Kind::Tuple, pop_mark())); break;
        case 0x85:
        case 0x86:
        case 0x87: {
          std::size_t n = op_ - 0x84u;
          if (stack_.size() < floor() + n) error("stack underflow");
          std::vector<ValuePtr> items(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
          push(sequence(Kind::Tuple, std::move(items)));
          break;
        }
        case '}': push(container(Kind::Dict)); break;
        case 'd': {
          auto kv = pop_mark();
          ValuePtr d = container(Kind::Dict);
          push(d);
          set_items(d, std::move(kv));
          break;
        }
        case 'a': {
          ValuePtr v = pop();
          append(top(), {std::move(v)});
          break;
        }
        case 'e':
        case 0x90: {  // APPENDS, ADDITEMS
          auto items = pop_mark();
          const ValuePtr& target = top();
          if (op_ == 0x90 && !target->is(Kind::List)) error("ADDITEMS target is not a set");
          append(target, std::move(items));
          break;
        }
        case 's': {
          ValuePtr v = pop();
          ValuePtr k = pop();
          set_items(top(), {std::move(k), std::move(v)});
          break;
        }
        case 'u': {
          auto kv = pop_mark();
          set_items(top(), std::move(kv));
          break;
        }
        case 'c': {
          std::string module(line());
          std::string name(line());
          push(text(Kind::Global, module + "." + name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          ValuePtr name = pop();
          ValuePtr module = pop();
          if (!name->is(Kind::String) || !module->is(Kind::String)) error("module and name must be strings");
          push(text(Kind::Global, module->s + "." + name->s));
          break;
        }
        case 'R':
        case 0x81: {  // REDUCE(callable, args), NEWOBJ(cls, args)
          ValuePtr args = pop();
          ValuePtr callable = pop();
          push(call(callable, args));
          break;
        }
        case 0x92: {  // NEWOBJ_EX(cls, args, kwargs): kwargs dropped
          pop();
          ValuePtr args = pop();
          ValuePtr cls = pop();
          push(call(cls, args));
          break;
        }
        case 'b': build(pop()); break;
        case 'p': memo_put(static_cast<std::uint64_t>(parse_int(line()))); break;
        case 'q': memo_put(le(1)); break;
        case 'r': memo_put(le(4)); break;
        case 0x94: memo_put(memo_.size()); break;
        case 'g': push(memo_get(static_cast<std::uint64_t>(parse_int(line())))); break;
        case 'h': push(memo_get(le(1))); break;
        case 'j': push(memo_get(le(4))); break;
        case 'P': push(persistent(text(Kind::String, line()))); break;
        case 'Q': push(persistent(pop())); break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op_);
          fail("unsupported pickle opcode ", hex, " (", opcode_name(op_), ") at byte ", op_pos_);
        }
      }
    }
    op_pos_ = pos_;
    fail("pickle: STOP missing (data ends at byte ", pos_, ")");
  }

  std::string unquote(std::string_view s) {
    if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front()) error("string is not quoted");
    s = s.substr(1, s.size() - 2);
    std::string out;
    for (std::size_t k = 0; k < s.size(); ++k) {
      if (s[k] != '\\' || k + 1 == s.size()) {
        out += s[k];
        continue;
      }
      char c = s[++k];
      if (c == 'n')
        out += '\n';
      else if (c == 't')
        out += '\t';
      else if (c == 'r')
        out += '\r';
      else if (c == 'x' && k + 2 < s.size()) {
        unsigned byte = 0;
        auto [end, ec] = std::from_chars(s.data() + k + 1, s.data() + k + 3, byte, 16);
        if (ec != std::errc() || end != s.data() + k + 3) error("bad \\x escape");
        out += static_cast<char>(byte);
        k += 2;
      } else
        out += c;
    }
    return out;
  }
  // Protocol 0 UNICODE: latin-1 text with \uXXXX / \UXXXXXXXX escapes.
  std::string raw_unicode_escape(std::string_view s) {
    std::string out;
    for (std::size_t k = 0; k < s.size(); ++k) {
      std::size_t n = 0;
      if (s[k] == '\\' && k + 1 < s.size()) n = s[k + 1] == 'u' ? 4 : s[k + 1] == 'U' ? 8 : 0;
      std::uint32_t cp = 0;
      if (n && k + 2 + n <= s.size()) {
        auto [end, ec] = std::from_chars(s.data() + k + 2, s.data() + k + 2 + n, cp, 16);
        if (ec != std::errc() || end != s.data() + k + 2 + n || cp > 0x10FFFF) error("bad \\u escape");
        append_utf8(out, cp);
        k += 1 + n;
      } else {
        append_utf8(out, static_cast<std::uint8_t>(s[k]));
      }
    }
    return out;
  }

  // Iterative DFS over the result: cuts reference cycles (the back-reference becomes None) and fails
  // when the nesting exceeds max_depth, so later recursive walks and destruction stay shallow.
  void check_tree(const ValuePtr& root, std::unordered_set<const Value*>& reachable) {
    if (!root || !has_children(*root)) return;
    struct Frame {
      Value* v;
      std::vector<ValuePtr*> slots;
      std::size_t next = 0;
      std::size_t height = 0;
    };
    std::unordered_map<const Value*, std::size_t> height;  // finished nodes
    std::unordered_set<const Value*> on_path;
    std::vector<Frame> path;
    auto enter = [&](Value* v) {
      if (path.size() >= limits_.max_depth) fail("pickle: nesting deeper than ", limits_.max_depth, " levels");
      Frame f{v, {}, 0, 0};
      for (auto& x : v->items) f.slots.push_back(&x);
      for (auto& [k, x] : v->dict) f.slots.insert(f.slots.end(), {&k, &x});
      if (v->state) f.slots.push_back(&v->state);
      on_path.insert(v);
      reachable.insert(v);
      path.push_back(std::move(f));
    };
    enter(root.get());
    while (!path.empty()) {
      Frame& f = path.back();
      if (f.next == f.slots.size()) {
        std::size_t h = f.height;
        height[f.v] = h;
        on_path.erase(f.v);
        path.pop_back();
        if (!path.empty()) path.back().height = std::max(path.back().height, h + 1);
        continue;
      }
      ValuePtr& child = *f.slots[f.next++];
      if (!child || !has_children(*child)) continue;
      if (on_path.count(child.get())) {
        child = make_none();
        continue;
      }
      if (auto it = height.find(child.get()); it != height.end()) {
        if (path.size() + it->second >= limits_.max_depth)
          fail("pickle: nesting deeper than ", limits_.max_depth, " levels");
        f.height = std::max(f.height, it->second + 1);
        continue;
      }
      enter(child.get());
    }
  }

  void release(const std::unordered_set<const Value*>* keep) {
    for (auto& v : arena_) {
      if (keep && keep->count(v.get())) continue;
      v->items.clear();
      v->dict.clear();
      v->state.reset();
    }
    arena_.clear();
  }
};

void repr_into(const Value& v, std::string& out, std::size_t max_len, int depth) {
  if (out.size() > max_len) return;
  if (depth > 8) {
    out += "...";
    return;
  }
  auto seq = [&](const std::vector<ValuePtr>& items, const char* open, const char* close) {
    out += open;
    for (std::size_t k = 0; k < items.size() && out.size() <= max_len; ++k) {
      if (k) out += ", ";
      if (items[k]) repr_into(*items[k], out, max_len, depth + 1);
    }
    if (std::string_view(open) == "(" && items.size() == 1) out += ",";
    out += close;
  };
  switch (v.kind) {
    case Kind::None: out += "None"; break;
    case Kind::Bool: out += v.b ? "True" : "False"; break;
    case Kind::Int: out += std::to_string(v.i); break;
    case Kind::Float: {  // Python's repr: shortest round trip, fixed notation for 1e-4 <= |x| < 1e16
      char buf[400];
      auto r = std::to_chars(buf, buf + sizeof buf, v.f, std::chars_format::scientific);
      std::string_view sci(buf, r.ptr - buf);
      std::size_t e = sci.find('e');
      int exp = e == std::string_view::npos ? 0 : std::atoi(std::string(sci.substr(e + 1)).c_str());
      if (e == std::string_view::npos || exp < -4 || exp >= 16) {
        out += sci;
        break;
      }
      r = std::to_chars(buf, buf + sizeof buf, v.f, std::chars_format::fixed);
      std::string_view fixed(buf, r.ptr - buf);
      out += fixed;
      if (fixed.find('.') == std::string_view::npos) out += ".0";
      break;
    }
    case Kind::String: {
      out += '\'';
      for (std::size_t k = 0; k < v.s.size() && out.size() <= max_len; ++k) {
        if (v.s[k] == '\'' || v.s[k] == '\\') out += '\\';
        out += v.s[k];
      }
      out += '\'';
      break;
    }
    case Kind::Bytes: out += "<" + std::to_string(v.s.size()) + " bytes>"; break;
    case Kind::List: seq(v.items, "[", "]"); break;
    case Kind::Tuple: seq(v.items, "(", ")"); break;
    case Kind::Dict: {
      out += '{';
      for (std::size_t k = 0; k < v.dict.size() && out.size() <= max_len; ++k) {
        if (k) out += ", ";
        if (v.dict[k].first) repr_into(*v.dict[k].first, out, max_len, depth + 1);
        out += ": ";
        if (v.dict[k].second) repr_into(*v.dict[k].second, out, max_len, depth + 1);
      }
      out += '}';
      break;
    }
    case Kind::Global: out += v.s; break;
    case Kind::Object: {
      // "Namespace(model='DiT-XL/2', image_size=256)": constructor args, then string-keyed state.
      std::size_t dot = v.s.rfind('.');
      out += dot == std::string::npos ? v.s : v.s.substr(dot + 1);
      out += '(';
      bool first = true;
      for (const auto& x : v.items) {
        if (out.size() > max_len) break;
        if (!first) out += ", ";
        first = false;
        if (x) repr_into(*x, out, max_len, depth + 1);
      }
      if (v.state && v.state->is(Kind::Dict)) {
        for (const auto& [k, x] : v.state->dict) {
          if (out.size() > max_len) break;
          if (!first) out += ", ";
          first = false;
          if (k && k->is(Kind::String))
            out += k->s;
          else if (k)
            repr_into(*k, out, max_len, depth + 1);
          out += '=';
          if (x) repr_into(*x, out, max_len, depth + 1);
        }
      } else if (v.state) {
        if (!first) out += ", ";
        repr_into(*v.state, out, max_len, depth + 1);
      }
      out += ')';
      break;
    }
    case Kind::Custom: out += "<" + (v.s.empty() ? std::string("custom") : v.s) + ">"; break;
  }
}

}  // namespace

ValuePtr Value::get(std::string_view key) const {
  if (!is(Kind::Dict)) return nullptr;
  for (auto it = dict.rbegin(); it != dict.rend(); ++it)  // last write wins, as in Python
    if (it->first && it->first->is(Kind::String) && it->first->s == key) return it->second;
  return nullptr;
}

std::string Value::repr(std::size_t max_len) const {
  max_len = std::max<std::size_t>(max_len, 8);
  std::string out;
  repr_into(*this, out, max_len, 0);
  if (out.size() > max_len) {
    out.resize(max_len - 3);
    out += "...";
  }
  return out;
}

ValuePtr make_none() {
  return make(Kind::None);
}

ValuePtr make_int(std::int64_t v) {
  ValuePtr p = make(Kind::Int);
  p->i = v;
  return p;
}

ValuePtr make_string(std::string v) {
  ValuePtr p = make(Kind::String);
  p->s = std::move(v);
  return p;
}

ValuePtr unpickle(std::string_view data, const Hooks& hooks, const Limits& limits) {
  return Unpickler(data, hooks, limits).run();
}

}  // namespace atelier::pickle
