// Typed configs with defaults, help and ranges, documented in one place (the struct), read from and
// written to JSON. A config is a plain struct with a `fields` visitor:
//
//   struct TrainConfig {
//     std::int64_t steps = 1000;
//     double lr = 1e-4;
//     std::string sampler = "ddim";
//     template <class V> void fields(V& v) {
//       v("steps", steps, "optimizer steps", Range{1, 1e9});
//       v("lr", lr, "learning rate", Range{0, 1});
//       v("sampler", sampler, "sampler name", Choices{"ddim", "euler"});
//     }
//   };
//
// Enum fields read and write as strings: declare the names next to the enum with a function found by
// argument-dependent lookup, and the field's choices come from it:
//
//   enum class TuneMethod { DiffFit, BitFit };
//   inline const EnumNames<TuneMethod>& enum_names(TuneMethod) {
//     static const EnumNames<TuneMethod> names = {{TuneMethod::DiffFit, "difffit"}, {TuneMethod::BitFit, "bitfit"}};
//     return names;
//   }
//
// from_json() rejects unknown keys (naming the key and the closest known one), wrong types and
// out-of-range values, naming the field; to_json() gives the effective config (every field).
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace atelier {

using json = nlohmann::json;

// Limits on JSON read from files and the command line: a document's size and its nesting depth. Deeper
// or larger input is refused with one error before anything is built from it.
inline constexpr std::size_t kMaxJobFileBytes = 1 << 20;        // job files, settings, --set values
inline constexpr std::size_t kMaxMetadataJsonBytes = 16 << 20;  // one metadata value of a model file
inline constexpr int kMaxJsonDepth = 64;
inline constexpr std::size_t kMaxListEntries = 4096;  // entries of one list field of a config

template <class E>
using EnumNames = std::vector<std::pair<E, std::string>>;

template <class T>
concept NamedEnum = std::is_enum_v<T> && requires(T e) {
  enum_names(e);
};

// The name of an enum value, and the value of a name (Error listing the names when unknown).
template <NamedEnum E>
const std::string& enum_name(E value) {
  for (const auto& [v, name] : enum_names(E{}))
    if (v == value) return name;
  fail("enum value ", static_cast<int>(value), " has no name");
}
template <NamedEnum E>
std::vector<std::string> enum_name_list() {
  std::vector<std::string> out;
  for (const auto& [v, name] : enum_names(E{})) out.push_back(name);
  return out;
}
template <NamedEnum E>
std::optional<E> enum_from_name(const std::string& name) {
  for (const auto& [v, n] : enum_names(E{}))
    if (n == name) return v;
  return std::nullopt;
}

struct Range {
  double min = -1e300;
  double max = 1e300;
};
struct Choices {
  std::vector<std::string> values;
  Choices(std::initializer_list<std::string> v) : values(v) {}
  explicit Choices(std::vector<std::string> v) : values(std::move(v)) {}
};

// Fields that name inputs on disk, so both clients can check a job's inputs before it starts
// (studio/workspace.h check_job_inputs): v("base", base, "base model", Input::Model).
enum class Input {
  File,         // any file that must exist (empty: unused)
  Model,        // the generator the job loads (a model file, or a preset name where the job allows one)
  Adapters,     // adapter / LoRA files applied to the job's Model
  ImageFolder,  // a folder of images (empty: unused)
  Folder,       // a folder that must exist, whose layout the job itself checks (empty: unused)
  Classes,      // class names of the job's Model file (checked against its metadata; empty: every class)
  Text,         // free text such as prompts (not a path; forms edit a list one entry per line)
};

// The name `atelier jobs --json` gives an Input.
inline const char* input_name(Input input) {
  switch (input) {
    case Input::File: return "file";
    case Input::Model: return "model";
    case Input::Adapters: return "adapters";
    case Input::ImageFolder: return "image_folder";
    case Input::Folder: return "folder";
    case Input::Classes: return "classes";
    case Input::Text: return "text";
  }
  return "?";
}

// A list field holding one value per entry of another list field (a weight per adapter): the studio draws
// them as one row per entry.
struct PerItem {
  const char* of;
  double fill = 1.0;  // an entry's value while the list is empty ("empty: 1 each")
};

// A field naming a file the job writes into its run folder: a plain file name with this extension
// (the runner refuses paths, reserved names and other extensions before the job starts).
struct OutputFile {
  const char* extension;
};

// What the CLI's `atelier jobs` prints and the GUI builds its forms from.
struct FieldInfo {
  std::string name;
  std::string type;  // bool, int, float, string, list[int], list[float], list[string], object
  std::string help;
  json default_value;
  std::optional<Range> range;
  std::vector<std::string> choices;
  std::optional<Input> input;
  std::optional<OutputFile> output;
  std::string per_item;  // PerItem: the list field this one has one value per entry of
  double per_item_fill = 1.0;
};

namespace config_detail {

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (NamedEnum<T>)
    return "string";
  else if constexpr (std::is_integral_v<T>)
    return "int";
  else if constexpr (std::is_floating_point_v<T>)
    return "float";
  else if constexpr (std::is_same_v<T, std::string>)
    return "string";
  else if constexpr (std::is_same_v<T, json>)
    return "object";
  else
    return "list[" + type_name<typename T::value_type>() + "]";
}

// Checks a JSON value against T; returns an error text or empty.
template <class T>
std::string check_type(const json& j) {
  if constexpr (std::is_same_v<T, bool>)
    return j.is_boolean() ? "" : "expected bool";
  else if constexpr (NamedEnum<T>) {
    if (!j.is_string()) return "expected string";
    if (enum_from_name<T>(j.get<std::string>())) return "";
    std::string list;
    for (const auto& n : enum_name_list<T>()) list += (list.empty() ? "" : ", ") + n;
    return "'" + j.get<std::string>() + "' is not one of: " + list;
  } else if constexpr (std::is_integral_v<T>) {
    double d = 0;
    if (j.is_number_unsigned()) {
      if (j.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
        return "integer too large";
      return "";
    }
    if (j.is_number_integer())
      d = static_cast<double>(j.get<std::int64_t>());
    else if (j.is_number_float() && std::trunc(j.get<double>()) == j.get<double>())
      d = j.get<double>();
    else
      return "expected int";
    if (d < static_cast<double>(std::numeric_limits<T>::lowest()) ||
        d > static_cast<double>(std::numeric_limits<T>::max()))
      return "integer out of range";
    return "";
  } else if constexpr (std::is_floating_point_v<T>)
    return j.is_number() ? "" : "expected float";
  else if constexpr (std::is_same_v<T, std::string>)
    return j.is_string() ? "" : "expected string";
  else if constexpr (std::is_same_v<T, json>)
    return "";
  else {
    if (!j.is_array()) return "expected " + type_name<T>();
    for (const auto& e : j)
      if (!check_type<typename T::value_type>(e).empty()) return "expected " + type_name<T>();
    return "";
  }
}

template <class T>
T convert(const json& j) {
  if constexpr (NamedEnum<T>) {
    return *enum_from_name<T>(j.get<std::string>());
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (j.is_number_float()) return static_cast<T>(j.get<double>());
    return j.get<T>();
  } else if constexpr (std::is_same_v<T, json>) {
    return j;
  } else if constexpr (std::is_same_v<T, bool> || std::is_arithmetic_v<T> || std::is_same_v<T, std::string>) {
    return j.get<T>();
  } else {
    T out;
    for (const auto& e : j) out.push_back(convert<typename T::value_type>(e));
    return out;
  }
}

template <class T>
void check_constraints(const std::string& name, const T& value, const std::optional<Range>& range,
                       const std::vector<std::string>& choices) {
  if constexpr (NamedEnum<T>) {
    return;
  } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    if (range && (static_cast<double>(value) < range->min || static_cast<double>(value) > range->max))
      fail_field(name, value, " is outside [", range->min, ", ", range->max, "]");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      fail_field(name, "'", value, "' is not one of: ", list);
    }
  } else if constexpr (!std::is_same_v<T, bool> && !std::is_same_v<T, json>) {
    for (const auto& e : value) check_constraints(name, e, range, choices);
  }
}

// A JSON value for an error message: at most ~80 characters.
std::string short_dump(const json& j);

struct Reader {
  const json& in;
  std::vector<std::string> seen;
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, std::optional<Range> range = std::nullopt) {
    read(name, value, range, {});
  }
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, const Choices& choices) {
    read(name, value, std::nullopt, choices.values);
  }
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, Input) {
    read(name, value, std::nullopt, {});
  }
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, OutputFile) {
    read(name, value, std::nullopt, {});
  }
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, PerItem, std::optional<Range> range = {}) {
    read(name, value, range, {});
  }
  template <class T>
  void read(const char* name, T& value, const std::optional<Range>& range, const std::vector<std::string>& choices) {
    seen.emplace_back(name);
    auto it = in.find(name);
    if (it == in.end() || it->is_null()) {
      check_constraints(name, value, range, choices);
      return;
    }
    if constexpr (!std::is_arithmetic_v<T> && !std::is_same_v<T, std::string> && !std::is_same_v<T, json> &&
                  !NamedEnum<T>)
      if (it->is_array() && it->size() > kMaxListEntries)
        fail_field(name, it->size(), " entries, more than the limit of ", kMaxListEntries);
    std::string err = check_type<T>(*it);
    if (!err.empty()) {
      if constexpr (NamedEnum<T>)
        if (it->is_string()) fail_field(name, err);
      fail_field(name, err, ", got ", it->type_name(), " ", short_dump(*it));
    }
    value = convert<T>(*it);
    check_constraints(name, value, range, choices);
  }
};

template <class T>
json value_json(const T& value) {
  if constexpr (NamedEnum<T>)
    return enum_name(value);
  else
    return json(value);
}

struct Writer {
  json& out;
  template <class T, class C = int, class D = int>
  void operator()(const char* name, const T& value, const char*, const C& = {}, const D& = {}) {
    out[name] = value_json(value);
  }
};

struct Describer {
  std::vector<FieldInfo>& out;
  template <class T>
  void operator()(const char* name, const T& value, const char* help, std::optional<Range> range = std::nullopt) {
    std::vector<std::string> choices;
    if constexpr (NamedEnum<T>) choices = enum_name_list<T>();
    out.push_back({name, type_name<T>(), help, value_json(value), range, choices, std::nullopt, std::nullopt, {}, 1.0});
  }
  template <class T>
  void operator()(const char* name, const T& value, const char* help, const Choices& choices) {
    out.push_back({name,
                   type_name<T>(),
                   help,
                   value_json(value),
                   std::nullopt,
                   choices.values,
                   std::nullopt,
                   std::nullopt,
                   {},
                   1.0});
  }
  template <class T>
  void operator()(const char* name, const T& value, const char* help, Input input) {
    out.push_back({name, type_name<T>(), help, value_json(value), std::nullopt, {}, input, std::nullopt, {}, 1.0});
  }
  template <class T>
  void operator()(const char* name, const T& value, const char* help, OutputFile output) {
    out.push_back({name, type_name<T>(), help, value_json(value), std::nullopt, {}, std::nullopt, output, {}, 1.0});
  }
  template <class T>
  void operator()(const char* name, const T& value, const char* help, PerItem per_item,
                  std::optional<Range> range = std::nullopt) {
    out.push_back({name,
                   type_name<T>(),
                   help,
                   value_json(value),
                   range,
                   {},
                   std::nullopt,
                   std::nullopt,
                   per_item.of,
                   per_item.fill});
  }
};

std::string closest(const std::string& key, const std::vector<std::string>& known);

}  // namespace config_detail

// Reads `cfg` from `j` (starting from cfg's current values as defaults). Keys in `ignored` (e.g.
// "kind") are skipped. Throws Error naming the offending key or field.
template <class Config>
void read_config(const json& j, Config& cfg, const std::vector<std::string>& ignored = {}) {
  if (!j.is_object()) fail("config must be a JSON object, got ", j.type_name());
  config_detail::Reader r{j, {}};
  cfg.fields(r);
  for (const auto& [key, _] : j.items()) {
    if (std::find(ignored.begin(), ignored.end(), key) != ignored.end()) continue;
    if (std::find(r.seen.begin(), r.seen.end(), key) == r.seen.end()) {
      std::string hint = config_detail::closest(key, r.seen);
      fail("unknown key '", key, "'", hint.empty() ? "" : " (did you mean '" + hint + "'?)");
    }
  }
}

template <class Config>
Config from_json(const json& j, const std::vector<std::string>& ignored = {}) {
  Config cfg;
  read_config(j, cfg, ignored);
  return cfg;
}

template <class Config>
json to_json(const Config& cfg) {
  json out = json::object();
  config_detail::Writer w{out};
  const_cast<Config&>(cfg).fields(w);
  return out;
}

template <class Config>
std::vector<FieldInfo> describe() {
  std::vector<FieldInfo> out;
  Config cfg;
  config_detail::Describer d{out};
  cfg.fields(d);
  return out;
}

// Parses `text` as JSON within the limits; Error names `what` (a file, a file's metadata key, an option)
// and the problem (syntax with line/column, depth, size, numbers out of range).
json parse_json(std::string_view text, const std::string& what, std::size_t max_bytes = kMaxMetadataJsonBytes);

// JSON text of `j` for files and metadata. Strings that are not UTF-8 (paths are bytes) come out with
// U+FFFD in place of their bad bytes instead of failing the write.
std::string json_text(const json& j, int indent = -1);

// A JSON array of strings as a vector (Error naming `what` for anything else).
std::vector<std::string> string_list(const json& j, const std::string& what);

// Parses "key=value" overrides (value as JSON when it parses, else as a string) into `j`.
void apply_override(json& j, const std::string& assignment);

// Loads a JSON file (a regular file of at most `max_bytes`); Error names the file and the line/column of a
// syntax error.
json load_json_file(const std::filesystem::path& path, std::size_t max_bytes = kMaxJobFileBytes);

}  // namespace atelier
