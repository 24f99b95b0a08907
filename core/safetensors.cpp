#include "core/safetensors.h"

#include <algorithm>
#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace atelier::safetensors {
namespace {

struct Mapping {
  DType st;
  torch::ScalarType torch;
};

// Writer-side table: every torch dtype that has a safetensors name.
const std::vector<Mapping>& writable_dtypes() {
  static const std::vector<Mapping> table = {
      {DType::BOOL, torch::kBool},
      {DType::U8, torch::kByte},
      {DType::I8, torch::kChar},
      {DType::I16, torch::kShort},
      {DType::F16, torch::kHalf},
      {DType::BF16, torch::kBFloat16},
      {DType::I32, torch::kInt},
      {DType::F32, torch::kFloat},
      {DType::I64, torch::kLong},
      {DType::F64, torch::kDouble},
      {DType::F8_E4M3, torch::kFloat8_e4m3fn},
      {DType::F8_E5M2, torch::kFloat8_e5m2},
      {DType::U16, torch::kUInt16},
      {DType::U32, torch::kUInt32},
      {DType::U64, torch::kUInt64},
  };
  return table;
}

DType to_st_dtype(torch::ScalarType t, const std::string& name) {
  for (const auto& m : writable_dtypes())
    if (m.torch == t) return m.st;
  fail("tensor '", name, "': dtype ", c10::toString(t), " has no safetensors equivalent");
}

}  // namespace

torch::ScalarType torch_dtype(DType d) {
  for (const auto& m : writable_dtypes())
    if (m.st == d) return m.torch;
  switch (d) {
    case DType::F8_E4M3:
    case DType::F8_E5M2: return torch::kFloat;  // decoded by hand
    case DType::U16: return torch::kInt;
    case DType::U32:
    case DType::U64: return torch::kLong;
    default: fail("dtype ", dtype_name(d), " is not supported");
  }
}

Reader::Reader(const std::filesystem::path& path) : file_(MappedFile::open(path)) {
  header_ = with_context([&] { return parse(file_->bytes()); }, path.string());
}

const std::filesystem::path& Reader::path() const {
  return file_->path();
}

const Entry* Reader::find(std::string_view name) const {
  for (const auto& e : header_.entries)
    if (e.name == name) return &e;
  return nullptr;
}

torch::Tensor Reader::load(std::string_view name) const {
  const Entry* e = find(name);
  if (e == nullptr) fail(path().string(), ": no tensor named '", name, "'");
  return load(*e);
}

torch::Tensor Reader::load(const Entry& e) const {
  const std::uint8_t* src = file_->data() + header_.data_start + e.begin;
  std::size_t nbytes = e.end - e.begin;
  auto target = torch_dtype(e.dtype);
  torch::Tensor out = torch::empty(e.shape, torch::TensorOptions().dtype(target));
  std::int64_t numel = out.numel();
  bool native = false;
  for (const auto& m : writable_dtypes()) native = native || m.st == e.dtype;
  if (native) {
    // memcpy also handles unaligned sources (old files are only 2-byte aligned).
    if (nbytes > 0) std::memcpy(out.data_ptr(), src, nbytes);
    return out;
  }
  // Widening / decoding for LibTorches without the dtype.
  if (e.dtype == DType::F8_E4M3 || e.dtype == DType::F8_E5M2) {
    float* dst = out.data_ptr<float>();
    for (std::int64_t i = 0; i < numel; ++i)
      dst[i] = e.dtype == DType::F8_E4M3 ? decode_f8_e4m3(src[i]) : decode_f8_e5m2(src[i]);
  } else if (e.dtype == DType::U16) {
    auto* dst = out.data_ptr<std::int32_t>();
    for (std::int64_t i = 0; i < numel; ++i) {
      std::uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);
      dst[i] = v;
    }
  } else {
    auto* dst = out.data_ptr<std::int64_t>();
    std::size_t width = dtype_bits(e.dtype) / 8;
    for (std::int64_t i = 0; i < numel; ++i) {
      std::uint64_t v = 0;
      std::memcpy(&v, src + width * i, width);
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(path().string(), ": tensor '", e.name, "': U64 value ", v, " does not fit this LibTorch's int64");
      dst[i] = static_cast<std::int64_t>(v);
    }
  }
  return out;
}

TensorFile Reader::load_all() const {
  TensorFile out;
  out.metadata = header_.metadata;
  for (const auto& e : header_.entries) out.tensors.emplace(e.name, load(e));
  return out;
}

TensorMap Reader::load_some(const std::set<std::string>& names) const {
  TensorMap out;
  std::vector<std::string> missing;
  for (const auto& name : names) {
    const Entry* e = find(name);
    if (e == nullptr)
      missing.push_back(name);
    else
      out.emplace(name, load(*e));
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    fail(path().string(), ": missing tensors: ", list);
  }
  return out;
}

TensorFile load(const std::filesystem::path& path) {
  return Reader(path).load_all();
}

namespace {

struct Planned {
  std::string name;
  DType dtype;
  torch::Tensor data;  // contiguous CPU
};

// Position in the reference's `Dtype` enum (derive(Ord)), which its writer sorts by, descending. It
// groups by element size but is not size then name: F64 < I64 < U64, F32 > U32 > I32, BF16 > F16 > ...
int reference_rank(DType d) {
  static constexpr DType kOrder[] = {DType::BOOL, DType::U8,  DType::I8,  DType::F8_E5M2, DType::F8_E4M3,
                                     DType::I16,  DType::U16, DType::F16, DType::BF16,    DType::I32,
                                     DType::U32,  DType::F32, DType::F64, DType::I64,     DType::U64};
  return static_cast<int>(std::find(std::begin(kOrder), std::end(kOrder), d) - std::begin(kOrder));
}

// Header JSON + ordered tensors, as the reference writer lays them out.
std::pair<std::string, std::vector<Planned>> plan(const TensorMap& tensors, const Metadata& metadata) {
  std::vector<Planned> items;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail("tensor '", name, "' is undefined");
    items.push_back({name, to_st_dtype(t.scalar_type(), name), t.detach().to(torch::kCPU).contiguous()});
  }
  std::stable_sort(items.begin(), items.end(), [](const Planned& a, const Planned& b) {
    int ra = reference_rank(a.dtype), rb = reference_rank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& p : items) {
    std::uint64_t n = p.data.numel() * p.data.element_size();
    header[p.name] = {
        {"dtype", dtype_name(p.dtype)}, {"shape", p.data.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string json = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  json.append((8 - json.size() % 8) % 8, ' ');
  return {std::move(json), std::move(items)};
}

template <class Sink>
void emit(const TensorMap& tensors, const Metadata& metadata, Sink&& sink) {
  auto [json, items] = plan(tensors, metadata);
  std::uint64_t n = json.size();
  sink(&n, 8);
  sink(json.data(), json.size());
  for (const auto& p : items) sink(p.data.data_ptr(), p.data.numel() * p.data.element_size());
}

}  // namespace

std::string serialize(const TensorMap& tensors, const Metadata& metadata) {
  std::string out;
  emit(tensors, metadata, [&](const void* d, std::size_t n) { out.append(static_cast<const char*>(d), n); });
  return out;
}

void save(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata) {
  with_context(
      [&] {
        AtomicFile f(path);
        emit(tensors, metadata, [&](const void* d, std::size_t n) { f.write(d, n); });
        f.commit();
      },
      path.string());
}

}  // namespace atelier::safetensors
