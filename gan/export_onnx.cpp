#include "gan/export_onnx.h"

#include <cmath>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "gan/onnx_proto.h"

namespace atelier {
namespace {

using onnx_proto::Attribute;
using onnx_proto::DataType;

Attribute attribute(const std::string& name, Attribute::Kind kind) {
  Attribute a;
  a.name = name;
  a.kind = kind;
  return a;
}
Attribute attr_int(const std::string& name, std::int64_t v) {
  auto a = attribute(name, Attribute::Kind::Int);
  a.i = v;
  return a;
}
Attribute attr_ints(const std::string& name, std::vector<std::int64_t> v) {
  auto a = attribute(name, Attribute::Kind::Ints);
  a.ints = std::move(v);
  return a;
}
Attribute attr_float(const std::string& name, double v) {
  auto a = attribute(name, Attribute::Kind::Float);
  a.f = static_cast<float>(v);
  return a;
}
Attribute attr_string(const std::string& name, std::string v) {
  auto a = attribute(name, Attribute::Kind::String);
  a.s = std::move(v);
  return a;
}

// Builds the graph node by node; initializers of weights go through weight() so that FP16 stores them
// as float16 + Cast.
class OnnxGraph {
 public:
  OnnxGraph(onnx_proto::Model& model, WeightPrecision precision) : model_(model), precision_(precision) {}

  // A float tensor as an initializer (weights honour the precision; constants stay float32).
  std::string weight(const std::string& name, const torch::Tensor& t) {
    if (precision_ == WeightPrecision::FP32) return add_tensor(name, t, DataType::Float);
    add_tensor(name + ".fp16", t, DataType::Float16);
    return op("Cast", {name + ".fp16"}, name, {attr_int("to", 1)});  // 1: TensorProto FLOAT
  }
  // Named constants are added once, however often they are read.
  std::string constant(const std::string& name, const torch::Tensor& t) {
    if (!constants_.insert(name).second) return name;
    return add_tensor(name, t, DataType::Float);
  }
  std::string shape(const std::string& name, const std::vector<std::int64_t>& values) {
    if (!constants_.insert(name).second) return name;
    return add_tensor(name, torch::tensor(values, torch::kInt64), DataType::Int64);
  }
  std::string op(const std::string& type, const std::vector<std::string>& inputs, const std::string& output,
                 std::vector<Attribute> attributes = {}) {
    model_.nodes.push_back({type, inputs, output, std::move(attributes)});
    return output;
  }

 private:
  std::string add_tensor(const std::string& name, const torch::Tensor& t, DataType type) {
    torch::Tensor data = t.detach().cpu();
    data = (type == DataType::Float16 ? data.to(torch::kFloat16)
            : type == DataType::Int64 ? data.to(torch::kInt64)
                                      : data.to(torch::kFloat32))
               .contiguous();
    model_.initializers.push_back(
        {name, type, data.sizes().vec(), std::string(static_cast<const char*>(data.data_ptr()), data.nbytes())});
    return name;
  }

  onnx_proto::Model& model_;
  WeightPrecision precision_;
  std::set<std::string> constants_;
};

// Writes the generator's forward pass (gan/e2gan.cpp) node for node.
class GeneratorGraph {
 public:
  GeneratorGraph(OnnxGraph& b, E2GanGenerator& g) : b_(b), g_(g) {}

  std::string conv(const std::string& x, const torch::nn::Conv2d& conv, const std::string& path) {
    const auto stride = (*conv->options.stride())[0];
    return b_.op(
        "Conv", {x, b_.weight(path + ".weight", conv->weight), b_.weight(path + ".bias", conv->bias)}, path,
        {attr_ints("kernel_shape", {3, 3}), attr_ints("pads", {1, 1, 1, 1}), attr_ints("strides", {stride, stride})});
  }
  std::string instance_norm(const std::string& x, const torch::nn::InstanceNorm2d& norm, const std::string& path) {
    return b_.op("InstanceNormalization",
                 {x, b_.weight(path + ".weight", norm->weight), b_.weight(path + ".bias", norm->bias)}, path,
                 {attr_float("epsilon", norm->options.eps())});
  }
  std::string relu(const std::string& x) { return b_.op("Relu", {x}, x + ".relu"); }
  std::string add(const std::string& a, const std::string& c, const std::string& out) {
    return b_.op("Add", {a, c}, out);
  }
  std::string upsample(const std::string& x, const std::string& path) {
    return b_.op("Resize", {x, "", b_.constant("resize.scales", torch::tensor({1.0f, 1.0f, 2.0f, 2.0f}))},
                 path + ".resize",
                 {attr_string("mode", "nearest"), attr_string("coordinate_transformation_mode", "asymmetric"),
                  attr_string("nearest_mode", "floor")});
  }
  std::string maybe_norm(const std::string& x, const torch::nn::InstanceNorm2d& norm, const std::string& path) {
    return norm ? instance_norm(x, norm, path) : x;
  }
  // Every stage but the output stage (up.0) ends in a ReLU; normalisation is optional.
  std::string stage(const std::string& x, torch::nn::ModuleList& list, std::size_t i, const std::string& path) {
    auto* s = list[i]->as<GanStageImpl>();
    auto h = maybe_norm(conv(s->up ? upsample(x, path) : x, s->conv, path + ".conv"), s->norm, path + ".norm");
    return path == "up.0" ? h : relu(h);
  }
  std::string resblock(const std::string& x, std::size_t i) {
    auto* r = g_->res[i]->as<GanResBlockImpl>();
    const std::string p = "res." + std::to_string(i);
    auto h = relu(maybe_norm(conv(x, r->conv1, p + ".conv1"), r->norm1, p + ".norm1"));
    return add(x, maybe_norm(conv(h, r->conv2, p + ".conv2"), r->norm2, p + ".norm2"), p);
  }

  // x [1, T, D] @ w^T + bias, w [out, in].
  std::string linear(const std::string& x, const torch::Tensor& w, const torch::Tensor& bias, const std::string& path) {
    auto y = b_.op("MatMul", {x, b_.weight(path + ".weight_t", w.t())}, path + ".matmul");
    return b_.op("Add", {y, b_.weight(path + ".bias", bias)}, path);
  }
  std::string layer_norm(const std::string& x, const torch::nn::LayerNorm& ln, const std::string& path) {
    return b_.op("LayerNormalization",
                 {x, b_.weight(path + ".weight", ln->weight), b_.weight(path + ".bias", ln->bias)}, path,
                 {attr_int("axis", -1), attr_float("epsilon", ln->options.eps())});
  }
  // [1, T, D] -> [1, heads, T, hd] (perm {0, 2, 1, 3}) or [1, heads, hd, T] (perm {0, 2, 3, 1}).
  std::string split_heads(const std::string& x, std::int64_t t, const std::vector<std::int64_t>& perm) {
    const auto d = g_->config().channels[2], h = g_->config().heads;
    auto r = b_.op("Reshape", {x, b_.shape("shape.heads." + std::to_string(t), {1, t, h, d / h})}, x + ".heads");
    return b_.op("Transpose", {r}, x + ".heads_t", {attr_ints("perm", perm)});
  }
  // q [1, h, T, hd], k [1, h, hd, S], v [1, h, S, hd] (the scale is in q) -> [1, T, D].
  std::string attention(const std::string& q, const std::string& k, const std::string& v, std::int64_t t,
                        const std::string& path) {
    auto w = b_.op("MatMul", {q, k}, path + ".scores");
    auto sm = b_.op("Softmax", {w}, path + ".softmax", {attr_int("axis", -1)});
    auto o = b_.op("MatMul", {sm, v}, path + ".mix");
    auto merged = b_.op("Transpose", {o}, path + ".merge_t", {attr_ints("perm", {0, 2, 1, 3})});
    return b_.op("Reshape", {merged, b_.shape("shape.tokens", {1, t, g_->config().channels[2]})}, path + ".merge");
  }

  std::string block(const std::string& x_in, std::int64_t t, const torch::Tensor& tokens) {
    auto& blk = *g_->block;
    const auto d = g_->config().channels[2], heads = g_->config().heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d / heads));
    // Self-attention: qkv as three projections, the scale folded into q.
    auto n1 = layer_norm(x_in, blk.norm1, "block.norm1");
    auto wq = blk.qkv->weight.chunk(3, 0), bq = blk.qkv->bias.chunk(3, 0);
    auto q = linear(n1, wq[0] * scale, bq[0] * scale, "block.qkv.q");
    auto k = linear(n1, wq[1], bq[1], "block.qkv.k");
    auto v = linear(n1, wq[2], bq[2], "block.qkv.v");
    auto a = attention(split_heads(q, t, {0, 2, 1, 3}), split_heads(k, t, {0, 2, 3, 1}),
                       split_heads(v, t, {0, 2, 1, 3}), t, "block.attn");
    auto x = add(x_in, linear(a, blk.proj->weight, blk.proj->bias, "block.proj"), "block.x1");
    // Cross-attention to the constant edit tokens: keys and values are precomputed.
    const auto e = tokens.size(0), hd = d / heads;
    auto kv = torch::nn::functional::linear(tokens, blk.kv->weight, blk.kv->bias).chunk(2, -1);  // [E, D] x2
    auto ck = b_.weight("block.cross.keys", kv[0].reshape({1, e, heads, hd}).permute({0, 2, 3, 1}).contiguous());
    auto cv = b_.weight("block.cross.values", kv[1].reshape({1, e, heads, hd}).permute({0, 2, 1, 3}).contiguous());
    auto cq = linear(layer_norm(x, blk.norm2, "block.norm2"), blk.q->weight * scale, blk.q->bias * scale, "block.q");
    auto c = attention(split_heads(cq, t, {0, 2, 1, 3}), ck, cv, t, "block.cross");
    x = add(x, linear(c, blk.cross_proj->weight, blk.cross_proj->bias, "block.cross_proj"), "block.x2");
    // MLP with exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
    auto h = linear(layer_norm(x, blk.norm3, "block.norm3"), blk.fc1->weight, blk.fc1->bias, "block.fc1");
    auto erf = b_.op("Erf", {b_.op("Div", {h, b_.constant("const.sqrt2", torch::tensor(std::sqrt(2.0f)))}, h + ".div")},
                     h + ".erf");
    auto one_plus = b_.op("Add", {erf, b_.constant("const.one", torch::tensor(1.0f))}, h + ".erf1");
    auto gelu =
        b_.op("Mul", {b_.op("Mul", {h, one_plus}, h + ".gelu_x"), b_.constant("const.half", torch::tensor(0.5f))},
              h + ".gelu");
    return add(x, linear(gelu, blk.fc2->weight, blk.fc2->bias, "block.fc2"), "block");
  }

  std::string forward(const std::string& x, std::int64_t height, std::int64_t width, const torch::Tensor& tokens) {
    const auto c2 = g_->config().channels[2];
    const auto th = height / 8, tw = width / 8, t = th * tw;
    auto f1 = resblock(resblock(stage(x, g_->down, 0, "down.0"), 0), 1);
    auto f2 = stage(f1, g_->down, 1, "down.1");
    auto f3 = stage(f2, g_->down, 2, "down.2");
    // [1, c2, th, tw] -> [1, T, c2]
    auto flat = b_.op("Reshape", {f3, b_.shape("shape.flat", {1, c2, t})}, "block.flat");
    auto tok = block(b_.op("Transpose", {flat}, "block.in", {attr_ints("perm", {0, 2, 1})}), t, tokens);
    auto back = b_.op("Transpose", {tok}, "block.out_t", {attr_ints("perm", {0, 2, 1})});
    auto g3 = b_.op("Reshape", {back, b_.shape("shape.grid", {1, c2, th, tw})}, "block.out");
    auto g2 = add(stage(g3, g_->up, 2, "up.2"), f2, "up.2.skip");
    auto g1 = resblock(add(stage(g2, g_->up, 1, "up.1"), f1, "up.1.skip"), 2);
    return b_.op("Tanh", {stage(g1, g_->up, 0, "up.0")}, "output");
  }

 private:
  OnnxGraph& b_;
  E2GanGenerator& g_;
};

// Runs an onnx_proto call; its std::runtime_error becomes an Error naming the file.
template <class F>
decltype(auto) for_file(const std::filesystem::path& path, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(path.string(), ": ", e.what());
  }
}

}  // namespace

void check_export_size(std::int64_t height, std::int64_t width, const std::string& field) {
  if (height <= 0 || width <= 0 || height % 8 != 0 || width % 8 != 0)
    fail_field(field, height, "x", width, " is not a positive multiple of the generator's stride 8");
}

void write_gan_onnx(const std::filesystem::path& path, E2GanGenerator& generator, const torch::Tensor& tokens,
                    const GanExportOptions& options) {
  check_export_size(options.height, options.width, "size");
  const auto& c = generator->config();
  if (tokens.dim() != 2 || tokens.size(0) != c.edit_tokens || tokens.size(1) != c.channels[2])
    fail("ONNX export: edit tokens ", tokens.sizes(), " do not fit the generator ([", c.edit_tokens, ", ",
         c.channels[2], "])");
  torch::NoGradGuard no_grad;
  generator->to(torch::kCPU);
  onnx_proto::Model model;
  model.doc = "E2GAN generator with the edit '" + options.edit + "' folded in";
  model.graph_name = "e2gan_generator";
  model.metadata = {{"atelier.edit", options.edit}};
  model.input = "input";
  model.output = "output";
  model.input_shape = model.output_shape = {1, 3, options.height, options.width};
  OnnxGraph builder(model, options.precision);
  GeneratorGraph(builder, generator)
      .forward("input", options.height, options.width, tokens.detach().cpu().to(torch::kFloat32));
  const std::string bytes = for_file(path, [&] { return onnx_proto::serialize(model); });
  write_file_atomic(path, bytes);
}

OnnxFileInfo read_onnx_info(const std::filesystem::path& path) {
  return for_file(path, [&] { return onnx_proto::summarize(read_file(path)); });
}

void check_onnx_file(const std::filesystem::path& path) {
  for_file(path, [&] { onnx_proto::check(read_file(path)); });
}

}  // namespace atelier
