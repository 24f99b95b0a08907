#include "core/config.h"

#include <algorithm>
#include <filesystem>

#include "core/atomic_file.h"

namespace atelier {
namespace config_detail {

std::string closest(const std::string& key, const std::vector<std::string>& known) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t prev = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t cur = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
        prev = cur;
      }
    }
    return row[b.size()];
  };
  std::string best;
  std::size_t best_d = 3;  // suggest only near misses
  for (const auto& k : known) {
    std::size_t d = distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}

std::string short_dump(const json& j) {
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() <= 80 ? text : text.substr(0, 77) + "...";
}

}  // namespace config_detail

json parse_json(std::string_view text, const std::string& what, std::size_t max_bytes) {
  if (text.size() > max_bytes)
    fail(what, ": ", text.size(), " bytes of JSON, more than the limit of ", max_bytes, " bytes");
  // The callback sees every value as it is parsed, so a document nested too deeply is refused at the
  // first level too many, before it is built.
  const json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth) fail(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), limit_depth);
  } catch (const json::exception& e) {
    fail(what, ": invalid JSON: ", e.what());
  }
}

std::string json_text(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

std::vector<std::string> string_list(const json& j, const std::string& what) {
  if (!j.is_array()) fail(what, ": expected a list of strings, got ", j.type_name());
  std::vector<std::string> out;
  for (const auto& v : j) {
    if (!v.is_string()) fail(what, ": expected a list of strings, found ", v.type_name());
    out.push_back(v.get<std::string>());
  }
  return out;
}

void apply_override(json& j, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("override '", assignment, "' is not of the form key=value");
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  if (!json::accept(text)) {  // not JSON: the value is the text itself
    j[key] = text;
    return;
  }
  j[key] = parse_json(text, "--set " + key, kMaxJobFileBytes);
}

json load_json_file(const std::filesystem::path& path, std::size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path.string(), std::filesystem::exists(path, ec) ? ": not a regular file" : ": cannot open: no such file");
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > max_bytes)
    fail(path.string(), ": ", size, " bytes, more than the limit of ", max_bytes, " bytes for a JSON file");
  return parse_json(read_file(path), path.string(), max_bytes);
}

}  // namespace atelier
