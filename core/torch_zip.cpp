#include "core/torch_zip.h"

#include <cstring>
#include <optional>

#include "core/error.h"
#include "core/mapped_file.h"

namespace atelier {
namespace {

using pickle::Value;
using pickle::ValuePtr;
using Kind = Value::Kind;

// Custom value tags (Value::s): a tensor, a storage (1-D tensor of its dtype), and a tensor whose
// rebuild failed; the latter is reported with its dotted name once the tree is complete.
constexpr const char* kTensorTag = "torch.Tensor";
constexpr const char* kStorageTag = "torch.Storage";
constexpr const char* kBadTensorTag = "torch.BadTensor";
constexpr std::size_t kMaxWalkDepth = 64;

// ---------------------------------------------------------------------------------------------------
// tensors

ValuePtr custom(const char* tag, std::shared_ptr<void> payload) {
  auto v = std::make_shared<Value>();
  v->kind = Kind::Custom;
  v->s = tag;
  v->custom = std::move(payload);
  return v;
}

const torch::Tensor* storage_of(const ValuePtr& v) {
  return v && v->is(Kind::Custom) && v->s == kStorageTag ? static_cast<const torch::Tensor*>(v->custom.get()) : nullptr;
}

std::optional<torch::ScalarType> dtype_named(std::string_view name) {
  using torch::ScalarType;
  // clang-format off
  static const std::map<std::string_view, ScalarType> table = {
      {"float32", ScalarType::Float}, {"float", ScalarType::Float}, {"float64", ScalarType::Double},
      {"double", ScalarType::Double}, {"float16", ScalarType::Half}, {"half", ScalarType::Half},
      {"bfloat16", ScalarType::BFloat16}, {"int64", ScalarType::Long}, {"long", ScalarType::Long},
      {"int32", ScalarType::Int}, {"int", ScalarType::Int}, {"int16", ScalarType::Short},
      {"short", ScalarType::Short}, {"int8", ScalarType::Char}, {"uint8", ScalarType::Byte},
      {"bool", ScalarType::Bool}, {"complex32", ScalarType::ComplexHalf}, {"complex64", ScalarType::ComplexFloat},
      {"cfloat", ScalarType::ComplexFloat}, {"complex128", ScalarType::ComplexDouble},
      {"cdouble", ScalarType::ComplexDouble},
      {"uint16", ScalarType::UInt16}, {"uint32", ScalarType::UInt32}, {"uint64", ScalarType::UInt64},
      {"float8_e4m3fn", ScalarType::Float8_e4m3fn}, {"float8_e5m2", ScalarType::Float8_e5m2},
      {"float8_e4m3fnuz", ScalarType::Float8_e4m3fnuz}, {"float8_e5m2fnuz", ScalarType::Float8_e5m2fnuz},
  };
  // clang-format on
  auto it = table.find(name);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

// "torch.FloatStorage" -> Float; "torch.UntypedStorage" / "torch.storage.UntypedStorage" -> Byte.
torch::ScalarType storage_dtype(const std::string& type) {
  using torch::ScalarType;
  // clang-format off
  static const std::map<std::string_view, ScalarType> table = {
      {"FloatStorage", ScalarType::Float}, {"DoubleStorage", ScalarType::Double}, {"HalfStorage", ScalarType::Half},
      {"BFloat16Storage", ScalarType::BFloat16}, {"LongStorage", ScalarType::Long}, {"IntStorage", ScalarType::Int},
      {"ShortStorage", ScalarType::Short}, {"CharStorage", ScalarType::Char}, {"ByteStorage", ScalarType::Byte},
      {"BoolStorage", ScalarType::Bool}, {"UntypedStorage", ScalarType::Byte},
      {"ComplexFloatStorage", ScalarType::ComplexFloat}, {"ComplexDoubleStorage", ScalarType::ComplexDouble},
  };
  // clang-format on
  std::size_t dot = type.rfind('.');
  auto it = table.find(std::string_view(type).substr(dot == std::string::npos ? 0 : dot + 1));
  if (type.rfind("torch.", 0) != 0 || it == table.end()) fail("storage type ", type, " is not supported");
  return it->second;
}

std::string shape_str(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t k = 0; k < v.size(); ++k) s += (k ? ", " : "") + std::to_string(v[k]);
  return s + "]";
}

class CheckpointReader {
 public:
  CheckpointReader(std::shared_ptr<MappedFile> file, std::map<std::string, ZipEntry> members, std::string top)
      : file_(std::move(file)), members_(std::move(members)), top_(std::move(top)) {}

  // pid = ('storage', storage_type, key, location, numel)
  ValuePtr load_storage(const ValuePtr& pid) {
    const auto& it = pid->items;
    if (!pid->is(Kind::Tuple) || it.size() < 5 || !it[0]->is(Kind::String) || it[0]->s != "storage" ||
        !it[1]->is(Kind::Global) || !it[2]->is(Kind::String) || !it[4]->is(Kind::Int) || it[4]->i < 0)
      fail("unsupported persistent id ", pid->repr());
    const torch::ScalarType dtype = storage_dtype(it[1]->s);
    const std::string& key = it[2]->s;
    const std::int64_t numel = it[4]->i;
    if (auto c = cache_.find(key); c != cache_.end()) {
      if (c->second.scalar_type() != dtype || c->second.numel() < numel)
        fail("storage '", key, "' is used with two different types or sizes");
      return custom(kStorageTag, std::make_shared<torch::Tensor>(c->second));
    }
    auto m = members_.find(top_ + "/data/" + key);
    if (m == members_.end()) fail("storage '", key, "': member ", top_, "/data/", key, " is missing");
    const std::uint64_t esize = c10::elementSize(dtype);
    if (static_cast<std::uint64_t>(numel) > m->second.size / esize)
      fail("storage '", key, "' needs ", numel, " x ", esize, " bytes but member ", m->first, " has ", m->second.size);

    std::uint8_t* ptr = file_->mutable_data() + m->second.offset;
    const auto options = torch::TensorOptions().dtype(dtype);
    torch::Tensor t;
    if (numel > 0 && reinterpret_cast<std::uintptr_t>(ptr) % 64 == 0) {
      // Zero-copy view of the (MAP_PRIVATE) mapping; the deleter keeps the mapping alive.
      auto keep_mapped = [file = file_](void*) {};
      t = torch::from_blob(ptr, {numel}, keep_mapped, options);
    } else {
      t = torch::empty({numel}, options);
      if (numel > 0) std::memcpy(t.data_ptr(), ptr, numel * esize);
    }
    cache_.emplace(key, t);
    storage_bytes_ += static_cast<std::uint64_t>(numel) * esize;
    return custom(kStorageTag, std::make_shared<torch::Tensor>(t));
  }

  ValuePtr reduce(const std::string& global, const std::vector<ValuePtr>& args) {
    if (global == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(global, args, false);
    if (global == "torch._utils._rebuild_tensor_v3") return rebuild_tensor(global, args, true);
    if (global == "torch._utils._rebuild_parameter" || global == "torch._utils._rebuild_parameter_with_state") {
      if (!args.empty() && args[0]->is(Kind::Custom)) return args[0];
      return nullptr;
    }
    // Tensor subclasses: (func, new_type, args, state); the subclass is dropped.
    if (global == "torch._tensor._rebuild_from_type_v2" && args.size() >= 3 && args[0]->is(Kind::Global) &&
        args[2]->is(Kind::Tuple))
      return reduce(args[0]->s, args[2]->items);
    return nullptr;
  }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, ZipEntry> members_;
  std::string top_;
  std::map<std::string, torch::Tensor> cache_;  // storage key -> storage, so shared storages stay shared
  // Bytes of the storages read, and of the tensor views over them as they would be written out.
  std::uint64_t storage_bytes_ = 0, view_bytes_ = 0;

  static std::vector<std::int64_t> ints(const ValuePtr& v, const char* what) {
    if (!v->is(Kind::Tuple) && !v->is(Kind::List)) fail("tensor ", what, " is not a tuple: ", v->repr(60));
    std::vector<std::int64_t> out;
    for (const auto& x : v->items) {
      if (!x->is(Kind::Int) || x->i < 0) fail("tensor ", what, " ", v->repr(60), " is not non-negative integers");
      out.push_back(x->i);
    }
    return out;
  }

  // v2: (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  // v3: (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
  ValuePtr rebuild_tensor(const std::string& global, const std::vector<ValuePtr>& args, bool v3) {
    if (args.size() < (v3 ? 7u : 4u)) fail(global, ": expected ", v3 ? 7 : 4, " arguments, got ", args.size());
    const torch::Tensor* storage = storage_of(args[0]);
    if (!storage) fail(global, ": argument 0 is not a storage but ", args[0]->repr(60));
    if (!args[1]->is(Kind::Int) || args[1]->i < 0) fail(global, ": bad storage offset ", args[1]->repr(60));
    const std::int64_t offset = args[1]->i;
    const auto size = ints(args[2], "size"), stride = ints(args[3], "stride");
    if (size.size() != stride.size())
      fail(global, ": size ", shape_str(size), " and stride ", shape_str(stride), " differ in rank");

    torch::Tensor st = *storage;
    if (v3) {
      std::optional<torch::ScalarType> dtype;
      if (args[6]->is(Kind::Global) && args[6]->s.rfind("torch.", 0) == 0) dtype = dtype_named(args[6]->s.substr(6));
      if (!dtype) fail(global, ": unsupported dtype ", args[6]->repr(60));
      if (st.scalar_type() != *dtype) {
        if (st.scalar_type() != torch::kByte) fail(global, ": storage of ", st.scalar_type(), " read as ", *dtype);
        const std::int64_t esize = c10::elementSize(*dtype);
        st = st.narrow(0, 0, st.numel() / esize * esize).view(*dtype);  // untyped bytes -> elements
      }
    }

    // Highest element index the view touches must lie inside the storage.
    std::int64_t last = offset;
    bool empty = false, overflow = false;
    for (std::size_t d = 0; d < size.size(); ++d) {
      if (size[d] == 0) empty = true;
      std::int64_t span = 0;
      overflow |= size[d] > 0 &&
                  (__builtin_mul_overflow(size[d] - 1, stride[d], &span) || __builtin_add_overflow(last, span, &last));
    }
    if (overflow || (empty ? offset > st.numel() : last >= st.numel())) {
      const std::string needed = overflow ? "more than 2^63" : std::to_string(empty ? offset : last + 1);
      auto msg = std::make_shared<std::string>("tensor of size " + shape_str(size) + ", stride " + shape_str(stride) +
                                               ", offset " + std::to_string(offset) + " needs " + needed +
                                               " elements but its storage has " + std::to_string(st.numel()));
      return custom(kBadTensorTag, msg);
    }
    // Views with stride 0 or overlapping strides have more elements than their storage; written out
    // contiguously (convert, safetensors) they multiply the file's bytes: a 1 KB file could become
    // gigabytes. Small expanded views are fine; beyond 16x the storages read plus 64 MB, refuse before
    // anything is allocated.
    std::int64_t numel = 1;
    for (const auto s : size) overflow |= __builtin_mul_overflow(numel, s, &numel);
    std::uint64_t bytes = 0;
    overflow |= __builtin_mul_overflow(static_cast<std::uint64_t>(numel), c10::elementSize(st.scalar_type()), &bytes);
    overflow |= __builtin_add_overflow(view_bytes_, bytes, &view_bytes_);
    if (overflow || view_bytes_ > 16 * storage_bytes_ + (64ull << 20)) {
      auto msg = std::make_shared<std::string>(
          "tensor of size " + shape_str(size) + ", stride " + shape_str(stride) + ": the file's tensors would take " +
          (overflow ? std::string("more than 2^64") : std::to_string(view_bytes_)) + " bytes over " +
          std::to_string(storage_bytes_) + " bytes of storage (overlapping views)");
      return custom(kBadTensorTag, msg);
    }
    return custom(kTensorTag, std::make_shared<torch::Tensor>(st.as_strided(size, stride, offset)));
  }
};

// ---------------------------------------------------------------------------------------------------
// flattening

std::string key_name(const ValuePtr& k) {
  if (k && k->is(Kind::String)) return k->s;
  if (k && k->is(Kind::Int)) return std::to_string(k->i);
  return k ? k->repr(60) : "None";
}

bool has_structure(const Value& v) {
  for (const auto& x : v.items)
    if (x && (x->is(Kind::Dict) || x->is(Kind::List) || x->is(Kind::Tuple) || x->is(Kind::Custom))) return true;
  return false;
}

// Visits the leaves of nested dicts (and of lists/tuples holding containers or tensors) with dotted
// names: {"model": {"w": t}, "opt": [{"lr": 1}]} -> ("model.w", t), ("opt.0.lr", 1).
template <class Leaf>
void walk(const ValuePtr& v, const std::string& name, std::size_t depth, const Leaf& leaf) {
  if (depth > kMaxWalkDepth) fail(name, ": nested deeper than ", kMaxWalkDepth, " levels");
  auto child = [&](const std::string& k) { return name.empty() ? k : name + "." + k; };
  if (v && v->is(Kind::Dict)) {
    for (const auto& [k, x] : v->dict) walk(x, child(key_name(k)), depth + 1, leaf);
  } else if (v && (v->is(Kind::List) || v->is(Kind::Tuple)) && has_structure(*v)) {
    for (std::size_t k = 0; k < v->items.size(); ++k) walk(v->items[k], child(std::to_string(k)), depth + 1, leaf);
  } else {
    leaf(name, v);
  }
}

TorchCheckpoint load(const std::shared_ptr<MappedFile>& file) {
  if (!file->bytes().empty() && file->bytes()[0] == '\x80')  // pickle PROTO: torch.save before 1.6
    fail("legacy (non-zip) torch.save format is not supported; re-save it with torch >= 1.6");
  std::map<std::string, ZipEntry> members;
  std::string pkl;
  for (auto& e : read_zip_directory(file->bytes())) {
    std::size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!pkl.empty()) fail("zip with several data.pkl (", pkl, ", ", e.name, ")");
      pkl = e.name;
    }
    members[e.name] = e;
  }
  if (pkl.empty()) fail("zip without data.pkl (not a torch.save checkpoint)");
  TorchCheckpoint ckpt;
  ckpt.path = file->path();
  ckpt.top_folder = pkl.substr(0, pkl.find('/'));
  auto member = [&](const ZipEntry& e) { return file->bytes().substr(e.offset, e.size); };
  if (auto bo = members.find(ckpt.top_folder + "/byteorder"); bo != members.end() && member(bo->second) != "little")
    fail("byte order '", member(bo->second).substr(0, 16), "' is not supported (only little-endian)");

  CheckpointReader reader(file, members, ckpt.top_folder);
  pickle::Hooks hooks;
  hooks.persistent_load = [&](const ValuePtr& pid) { return reader.load_storage(pid); };
  hooks.reduce = [&](const std::string& g, const std::vector<ValuePtr>& args) { return reader.reduce(g, args); };
  ckpt.root = with_context([&] { return pickle::unpickle(member(members[pkl]), hooks); }, pkl);

  walk(ckpt.root, "", 0, [](const std::string& name, const ValuePtr& v) {
    if (v && v->is(Kind::Custom) && v->s == kBadTensorTag)
      fail(name.empty() ? "tensor" : name, ": ", *static_cast<const std::string*>(v->custom.get()));
  });
  return ckpt;
}

}  // namespace

TorchCheckpoint load_torch_checkpoint(const std::filesystem::path& path) {
  auto file = MappedFile::open(path);
  return with_context([&] { return load(file); }, path.string());
}

const torch::Tensor* as_tensor(const pickle::ValuePtr& v) {
  return v && v->is(Kind::Custom) && v->s == kTensorTag ? static_cast<const torch::Tensor*>(v->custom.get()) : nullptr;
}

TensorFile flatten_checkpoint(const TorchCheckpoint& ckpt) {
  TensorFile out;
  with_context(
      [&] {
        walk(ckpt.root, "", 0, [&](const std::string& name, const ValuePtr& v) {
          if (const torch::Tensor* t = as_tensor(v)) {
            if (!out.tensors.emplace(name.empty() ? "tensor" : name, *t).second) fail("duplicate tensor name ", name);
          } else {
            std::string text = v && v->is(Kind::String) ? v->s : v ? v->repr(1024) : "None";
            if (!out.metadata.emplace(name.empty() ? "value" : name, std::move(text)).second)
              fail("duplicate metadata name ", name);
          }
        });
      },
      ckpt.path.string());
  return out;
}

}  // namespace atelier
