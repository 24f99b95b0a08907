// libFuzzer target: job documents as the runner reads them (core/config.h): bounded JSON parsing, then a
// typed config with every kind of field (numbers with ranges, strings with choices, an enum, lists,
// nested blocks, input and output roles), its effective config written back and read again, and a
// "key=value" override taken from the input's first line.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/config.h"
#include "core/error.h"

namespace {

enum class Mode { Fast, Exact };
const atelier::EnumNames<Mode>& enum_names(Mode) {
  static const atelier::EnumNames<Mode> names = {{Mode::Fast, "fast"}, {Mode::Exact, "exact"}};
  return names;
}

struct Block {
  std::int64_t steps = 10;
  double lr = 1e-3;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "steps", atelier::Range{1, 1e9});
    v("lr", lr, "learning rate", atelier::Range{0, 1});
  }
};

struct FuzzConfig {
  Block block;
  bool flag = false;
  std::string sampler = "ddim";
  Mode mode = Mode::Fast;
  std::vector<std::string> classes;
  std::vector<double> weights;
  std::vector<std::int64_t> sizes{32};
  std::string model = "model.safetensors";
  std::string output = "out.safetensors";
  atelier::json extra = atelier::json::object();
  template <class V>
  void fields(V& v) {
    block.fields(v);
    v("flag", flag, "a flag");
    v("sampler", sampler, "sampler", atelier::Choices{"ddim", "euler"});
    v("mode", mode, "mode");
    v("classes", classes, "names");
    v("weights", weights, "weights", atelier::Range{-100, 100});
    v("sizes", sizes, "sizes", atelier::Range{8, 1024});
    v("model", model, "model", atelier::Input::Model);
    v("output", output, "output", atelier::OutputFile{".safetensors"});
    v("extra", extra, "free-form object");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    atelier::json doc = atelier::parse_json(text, "job.json", atelier::kMaxJobFileBytes);
    if (doc.is_object()) {
      const auto cfg = atelier::from_json<FuzzConfig>(doc, {"kind"});
      const atelier::json effective = atelier::to_json(cfg);
      (void)atelier::from_json<FuzzConfig>(effective);
      (void)effective.dump(-1, ' ', false, atelier::json::error_handler_t::replace);
    }
  } catch (const atelier::Error&) {
  }
  try {
    atelier::json doc = atelier::json::object();
    atelier::apply_override(doc, std::string(text.substr(0, text.find('\n'))));
  } catch (const atelier::Error&) {
  }
  return 0;
}
