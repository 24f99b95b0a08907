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

}  // namespace config_detail

void apply_override(json& j, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("override '", assignment, "' is not of the form key=value");
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  j[key] = value.is_discarded() ? json(text) : value;
}

json load_json_file(const std::filesystem::path& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

}  // namespace atelier
