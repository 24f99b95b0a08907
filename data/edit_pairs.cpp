#include "data/edit_pairs.h"

#include "core/error.h"
#include "core/safetensors.h"

namespace atelier {

torch::Tensor to_uint8_image(const torch::Tensor& x) {
  return ((x.detach().to(torch::kCPU, torch::kFloat) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch::kUInt8);
}

torch::Tensor from_uint8_image(const torch::Tensor& x) {
  return x.to(torch::kFloat) / 127.5 - 1;
}

PairSet PairSet::subset(const torch::Tensor& indices) const {
  PairSet s;
  auto pick = [&](const torch::Tensor& t) { return t.defined() ? t.index_select(0, indices) : t; };
  s.input = pick(input), s.teacher = pick(teacher), s.truth = pick(truth), s.label = pick(label);
  return s;
}

void save_edit_pairs(const std::filesystem::path& path, const EditPairs& pairs) {
  TensorMap tensors;
  for (const auto& [name, set] : {std::pair{"train", &pairs.train}, std::pair{"val", &pairs.val}}) {
    if (set->size() == 0) continue;
    const std::string p = std::string(name) + ".";
    tensors[p + "input"] = to_uint8_image(set->input);
    tensors[p + "teacher"] = to_uint8_image(set->teacher);
    if (set->truth.defined()) tensors[p + "truth"] = to_uint8_image(set->truth);
    tensors[p + "label"] = set->label.to(torch::kCPU, torch::kLong).contiguous();
  }
  safetensors::save(path, tensors,
                    {{"atelier.kind", "edit_pairs"},
                     {"edit", pairs.edit},
                     {"classes", json_text(pairs.classes)},
                     {"info", json_text(pairs.info)}});
}

EditPairs load_edit_pairs(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail(path.string(), ": edit-pairs file does not exist");
  TensorFile f = safetensors::load(path);
  const std::string what = path.string();
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(what, ": not an edit-pairs file (metadata '", key, "' missing)");
    return it->second;
  };
  if (meta("atelier.kind") != "edit_pairs") fail(what, ": not an edit-pairs file (kind '", meta("atelier.kind"), "')");
  EditPairs pairs;
  pairs.edit = meta("edit");
  pairs.classes = string_list(parse_json(meta("classes"), what + ": metadata 'classes'"), what + ": classes");
  pairs.info = parse_json(meta("info"), what + ": metadata 'info'");
  auto read_set = [&](const std::string& name, PairSet& set, bool required) {
    const std::string p = name + ".";
    if (!f.tensors.count(p + "input")) {
      if (required) fail(what, ": no '", p, "input' tensor");
      return;
    }
    auto image = [&](const std::string& key, bool needed) -> torch::Tensor {
      auto it = f.tensors.find(p + key);
      if (it == f.tensors.end()) {
        if (needed) fail(what, ": no '", p, key, "' tensor");
        return {};
      }
      const auto& t = it->second;
      if (t.dim() != 4 || t.size(1) != 3 || t.scalar_type() != torch::kUInt8)
        fail(what, ": '", p, key, "' must be uint8 [N, 3, H, W], got ", t.sizes());
      return from_uint8_image(t);
    };
    set.input = image("input", true);
    set.teacher = image("teacher", true);
    set.truth = image("truth", false);
    auto it = f.tensors.find(p + "label");
    if (it == f.tensors.end()) fail(what, ": no '", p, "label' tensor");
    set.label = it->second.to(torch::kLong);
    for (const auto& t : {set.teacher, set.truth, set.label})
      if (t.defined() && t.size(0) != set.input.size(0))
        fail(what, ": the '", name, "' set's tensors disagree on the number of pairs");
    if (set.teacher.sizes() != set.input.sizes() || (set.truth.defined() && set.truth.sizes() != set.input.sizes()))
      fail(what, ": the '", name, "' set's images differ in size");
  };
  read_set("train", pairs.train, true);
  read_set("val", pairs.val, false);
  return pairs;
}

}  // namespace atelier
