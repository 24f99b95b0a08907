#include "gan/export_ncnn.h"

#include <cstdio>
#include <map>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace atelier {
namespace {

constexpr std::uint32_t kFp16Tag = 0x01306B47;

struct NcnnLayer {
  std::string type, name;
  std::vector<std::string> inputs, outputs;
  std::string params;  // " 0=... 1=..."
};

// Collects layers and weights, then writes the .param with a Split wherever a blob has several readers.
class NcnnModel {
 public:
  explicit NcnnModel(WeightPrecision precision) : precision_(precision) {}

  std::string layer(const std::string& type, const std::string& name, const std::vector<std::string>& inputs,
                    const std::string& params) {
    layers_.push_back({type, name, inputs, {name}, params});
    return name;
  }
  // A weight loaded with storage tag (type 0 in ModelBin::load).
  void tagged(const torch::Tensor& t) {
    auto data = t.detach().cpu().contiguous();
    if (precision_ == WeightPrecision::FP32) {
      put_u32(0);
      put(data.to(torch::kFloat32).contiguous());
    } else {
      put_u32(kFp16Tag);
      put(data.to(torch::kFloat16).contiguous());
      while (bin_.size() % 4 != 0) bin_.push_back('\0');
    }
  }
  // A float32 array loaded raw (type 1).
  void raw(const torch::Tensor& t) { put(t.detach().cpu().to(torch::kFloat32).contiguous()); }

  std::string param_text() const {
    std::map<std::string, int> readers;
    for (const auto& l : layers_)
      for (const auto& in : l.inputs) ++readers[in];
    std::vector<NcnnLayer> out;
    std::map<std::string, int> taken;
    auto rename = [&](const std::string& blob) {
      if (readers.at(blob) < 2) return blob;
      return blob + "_split" + std::to_string(taken[blob]++);
    };
    for (const auto& l : layers_) {
      NcnnLayer copy = l;
      for (auto& in : copy.inputs) in = rename(in);
      out.push_back(copy);
      for (const auto& top : l.outputs) {
        auto it = readers.find(top);
        if (it == readers.end() || it->second < 2) continue;
        NcnnLayer split{"Split", top + "_split", {top}, {}, ""};
        for (int k = 0; k < it->second; ++k) split.outputs.push_back(top + "_split" + std::to_string(k));
        out.push_back(split);
      }
    }
    std::set<std::string> blobs;
    for (const auto& l : out)
      for (const auto& o : l.outputs) blobs.insert(o);
    std::ostringstream s;
    s << "7767517\n" << out.size() << " " << blobs.size() << "\n";
    for (const auto& l : out) {
      char head[160];
      std::snprintf(head, sizeof head, "%-24s %-32s %zu %zu", l.type.c_str(), l.name.c_str(), l.inputs.size(),
                    l.outputs.size());
      s << head;
      for (const auto& in : l.inputs) s << " " << in;
      for (const auto& o : l.outputs) s << " " << o;
      s << l.params << "\n";
    }
    return s.str();
  }
  const std::string& bin() const { return bin_; }

 private:
  void put_u32(std::uint32_t v) { bin_.append(reinterpret_cast<const char*>(&v), 4); }
  void put(const torch::Tensor& t) { bin_.append(static_cast<const char*>(t.data_ptr()), t.nbytes()); }

  WeightPrecision precision_;
  std::vector<NcnnLayer> layers_;
  std::string bin_;
};

// A float in .param form: ncnn tells floats from ints by a '.' or an exponent.
std::string f(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9e", v);
  return buf;
}
std::string i(std::int64_t v) {
  return std::to_string(v);
}

class GeneratorLayers {
 public:
  GeneratorLayers(NcnnModel& m, E2GanGenerator& g) : m_(m), g_(g) {}

  std::string conv(const std::string& x, const torch::nn::Conv2d& conv, const std::string& path) {
    const auto out = conv->weight.size(0), stride = (*conv->options.stride())[0];
    m_.layer(
        "Convolution", path, {x},
        " 0=" + i(out) + " 1=3 11=3 3=" + i(stride) + " 13=" + i(stride) + " 4=1 5=1 6=" + i(conv->weight.numel()));
    m_.tagged(conv->weight);
    m_.raw(conv->bias);
    return path;
  }
  std::string instance_norm(const std::string& x, const torch::nn::InstanceNorm2d& norm, const std::string& path) {
    m_.layer("InstanceNorm", path, {x}, " 0=" + i(norm->weight.size(0)) + " 1=" + f(norm->options.eps()) + " 2=1");
    m_.raw(norm->weight);
    m_.raw(norm->bias);
    return path;
  }
  std::string relu(const std::string& x) { return m_.layer("ReLU", x + ".relu", {x}, ""); }
  std::string add(const std::string& a, const std::string& b, const std::string& out) {
    return m_.layer("BinaryOp", out, {a, b}, " 0=0");
  }
  std::string maybe_norm(const std::string& x, const torch::nn::InstanceNorm2d& norm, const std::string& path) {
    return norm ? instance_norm(x, norm, path) : x;
  }
  // Every stage but the output stage (up.0) ends in a ReLU; normalisation is optional.
  std::string stage(const std::string& x, torch::nn::ModuleList& list, std::size_t k, const std::string& path) {
    auto* s = list[k]->as<GanStageImpl>();
    auto in = s->up ? m_.layer("Interp", path + ".resize", {x}, " 0=1 1=" + f(2.0) + " 2=" + f(2.0)) : x;
    auto h = maybe_norm(conv(in, s->conv, path + ".conv"), s->norm, path + ".norm");
    return path == "up.0" ? h : relu(h);
  }
  std::string resblock(const std::string& x, std::size_t k) {
    auto* r = g_->res[k]->as<GanResBlockImpl>();
    const std::string p = "res." + std::to_string(k);
    auto h = relu(maybe_norm(conv(x, r->conv1, p + ".conv1"), r->norm1, p + ".norm1"));
    return add(x, maybe_norm(conv(h, r->conv2, p + ".conv2"), r->norm2, p + ".norm2"), p);
  }
  std::string layer_norm(const std::string& x, const torch::nn::LayerNorm& ln, const std::string& path) {
    m_.layer("LayerNorm", path, {x}, " 0=" + i(ln->weight.size(0)) + " 1=" + f(ln->options.eps()) + " 2=1");
    m_.raw(ln->weight);
    m_.raw(ln->bias);
    return path;
  }
  std::string inner_product(const std::string& x, const torch::nn::Linear& fc, const std::string& path) {
    m_.layer("InnerProduct", path, {x}, " 0=" + i(fc->weight.size(0)) + " 1=1 2=" + i(fc->weight.numel()));
    m_.tagged(fc->weight);
    m_.raw(fc->bias);
    return path;
  }
  // MultiHeadAttention: 0=embed_dim 1=num_heads 2=weight_data_size 3=kdim 4=vdim; weights q, k, v, out
  // ([out, in] each, tagged) with float32 biases. Inputs: q (= k = v) or q and kv.
  std::string attention(const std::vector<std::string>& inputs, const torch::Tensor& wq, const torch::Tensor& bq,
                        const torch::Tensor& wk, const torch::Tensor& bk, const torch::Tensor& wv,
                        const torch::Tensor& bv, const torch::nn::Linear& out, const std::string& path) {
    const auto d = g_->config().channels[2];
    m_.layer("MultiHeadAttention", path, inputs,
             " 0=" + i(d) + " 1=" + i(g_->config().heads) + " 2=" + i(d * d) + " 3=" + i(d) + " 4=" + i(d));
    m_.tagged(wq);
    m_.raw(bq);
    m_.tagged(wk);
    m_.raw(bk);
    m_.tagged(wv);
    m_.raw(bv);
    m_.tagged(out->weight);
    m_.raw(out->bias);
    return path;
  }

  std::string block(const std::string& x_in, const torch::Tensor& tokens) {
    auto& blk = *g_->block;
    auto w = blk.qkv->weight.chunk(3, 0), b = blk.qkv->bias.chunk(3, 0);
    auto a = attention({layer_norm(x_in, blk.norm1, "block.norm1")}, w[0], b[0], w[1], b[1], w[2], b[2], blk.proj,
                       "block.attn");
    auto x = add(x_in, a, "block.x1");
    m_.layer("MemoryData", "block.edit_tokens", {}, " 0=" + i(tokens.size(1)) + " 1=" + i(tokens.size(0)));
    m_.raw(tokens);
    auto kw = blk.kv->weight.chunk(2, 0), kb = blk.kv->bias.chunk(2, 0);
    auto c = attention({layer_norm(x, blk.norm2, "block.norm2"), "block.edit_tokens"}, blk.q->weight, blk.q->bias,
                       kw[0], kb[0], kw[1], kb[1], blk.cross_proj, "block.cross");
    x = add(x, c, "block.x2");
    auto h = inner_product(layer_norm(x, blk.norm3, "block.norm3"), blk.fc1, "block.fc1");
    auto gelu = m_.layer("GELU", "block.gelu", {h}, " 0=0");
    return add(x, inner_product(gelu, blk.fc2, "block.fc2"), "block");
  }

  void forward(std::int64_t height, std::int64_t width, const torch::Tensor& tokens) {
    const auto c2 = g_->config().channels[2];
    const auto th = height / 8, tw = width / 8;
    m_.layer("Input", "input", {}, " 0=" + i(width) + " 1=" + i(height) + " 2=3");
    auto f1 = resblock(resblock(stage("input", g_->down, 0, "down.0"), 0), 1);
    auto f2 = stage(f1, g_->down, 1, "down.1");
    auto f3 = stage(f2, g_->down, 2, "down.2");
    // [c2, th, tw] -> [c2, T] -> [T, c2]
    auto flat = m_.layer("Reshape", "block.flat", {f3}, " 0=" + i(th * tw) + " 1=" + i(c2));
    auto tok = block(m_.layer("Permute", "block.in", {flat}, " 0=1"), tokens);
    auto back = m_.layer("Permute", "block.out_t", {tok}, " 0=1");
    auto g3 = m_.layer("Reshape", "block.out", {back}, " 0=" + i(tw) + " 1=" + i(th) + " 2=" + i(c2));
    auto g2 = add(stage(g3, g_->up, 2, "up.2"), f2, "up.2.skip");
    auto g1 = resblock(add(stage(g2, g_->up, 1, "up.1"), f1, "up.1.skip"), 2);
    m_.layer("TanH", "output", {stage(g1, g_->up, 0, "up.0")}, "");
  }

 private:
  NcnnModel& m_;
  E2GanGenerator& g_;
};

}  // namespace

void write_gan_ncnn(const std::filesystem::path& param, const std::filesystem::path& bin, E2GanGenerator& generator,
                    const torch::Tensor& tokens, const GanExportOptions& options) {
  check_export_size(options.height, options.width, "size");
  const auto& c = generator->config();
  if (tokens.dim() != 2 || tokens.size(0) != c.edit_tokens || tokens.size(1) != c.channels[2])
    fail("ncnn export: edit tokens ", tokens.sizes(), " do not fit the generator ([", c.edit_tokens, ", ",
         c.channels[2], "])");
  torch::NoGradGuard no_grad;
  generator->to(torch::kCPU);
  NcnnModel model(options.precision);
  GeneratorLayers(model, generator).forward(options.height, options.width, tokens.detach().cpu());
  AtomicFile param_file(param), bin_file(bin);
  param_file.write(model.param_text());
  bin_file.write(model.bin());
  bin_file.commit();
  param_file.commit();
}

}  // namespace atelier
