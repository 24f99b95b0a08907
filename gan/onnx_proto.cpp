#include "gan/onnx_proto.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <set>
#include <stdexcept>

namespace atelier::onnx_proto {
namespace {

int proto_type(DataType t) {
  switch (t) {
    case DataType::Float16: return onnx::TensorProto::FLOAT16;
    case DataType::Int64: return onnx::TensorProto::INT64;
    case DataType::Float: break;
  }
  return onnx::TensorProto::FLOAT;
}

void set_float_tensor(onnx::ValueInfoProto* v, const std::string& name, const std::vector<std::int64_t>& dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t->mutable_shape()->add_dim()->set_dim_value(d);
}

void add_attribute(onnx::NodeProto* n, const Attribute& a) {
  auto* p = n->add_attribute();
  p->set_name(a.name);
  switch (a.kind) {
    case Attribute::Kind::Int:
      p->set_type(onnx::AttributeProto::INT);
      p->set_i(a.i);
      break;
    case Attribute::Kind::Ints:
      p->set_type(onnx::AttributeProto::INTS);
      for (auto x : a.ints) p->add_ints(x);
      break;
    case Attribute::Kind::Float:
      p->set_type(onnx::AttributeProto::FLOAT);
      p->set_f(a.f);
      break;
    case Attribute::Kind::String:
      p->set_type(onnx::AttributeProto::STRING);
      p->set_s(a.s);
      break;
  }
}

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) throw std::runtime_error("not an ONNX model (protobuf parse failed)");
  return model;
}

void run_checker(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("the ONNX checker rejects the model: ") + e.what());
  }
}

}  // namespace

std::string serialize(const Model& m) {
  onnx::ModelProto model;
  model.set_ir_version(m.ir_version);
  model.set_producer_name(m.producer);
  model.set_model_version(1);
  model.set_doc_string(m.doc);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(m.opset);
  for (const auto& [key, value] : m.metadata) {
    auto* p = model.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }
  auto* g = model.mutable_graph();
  g->set_name(m.graph_name);
  set_float_tensor(g->add_input(), m.input, m.input_shape);
  set_float_tensor(g->add_output(), m.output, m.output_shape);
  for (const auto& init : m.initializers) {
    auto* t = g->add_initializer();
    t->set_name(init.name);
    t->set_data_type(proto_type(init.type));
    for (auto d : init.dims) t->add_dims(d);
    t->set_raw_data(init.raw);
  }
  for (const auto& node : m.nodes) {
    auto* n = g->add_node();
    n->set_op_type(node.op);
    n->set_name(node.output);
    for (const auto& in : node.inputs) n->add_input(in);
    n->add_output(node.output);
    for (const auto& a : node.attributes) add_attribute(n, a);
  }
  run_checker(model);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("could not serialize the ONNX model");
  return bytes;
}

Summary summarize(const std::string& bytes) {
  const onnx::ModelProto model = parse(bytes);
  Summary s;
  s.ir_version = model.ir_version();
  for (const auto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") s.opset = o.version();
  const auto& g = model.graph();
  s.nodes = g.node_size();
  s.initializers = g.initializer_size();
  auto dims = [](const onnx::ValueInfoProto& v) {
    std::vector<std::int64_t> out;
    for (const auto& d : v.type().tensor_type().shape().dim()) out.push_back(d.dim_value());
    return out;
  };
  if (g.input_size() > 0) s.input_shape = dims(g.input(0));
  if (g.output_size() > 0) s.output_shape = dims(g.output(0));
  std::set<std::string> ops;
  for (const auto& n : g.node()) ops.insert(n.op_type());
  s.op_types.assign(ops.begin(), ops.end());
  for (const auto& t : g.initializer())
    if (t.data_type() == onnx::TensorProto::FLOAT16) s.fp16_weights = true;
  return s;
}

void check(const std::string& bytes) {
  run_checker(parse(bytes));
}

}  // namespace atelier::onnx_proto
