// A plain description of an ONNX model and its serialization with the ONNX protobuf classes (Debian's
// libonnx-dev + libprotobuf). Kept free of LibTorch on purpose: the torch wheel ships its own, older
// protobuf headers, so the one translation unit that includes ONNX's headers is compiled without
// LibTorch's include path (gan/CMakeLists.txt, target atelier_onnx_proto).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace atelier::onnx_proto {

struct Attribute {
  enum class Kind { Int, Ints, Float, String };
  std::string name;
  Kind kind = Kind::Int;
  std::int64_t i = 0;
  std::vector<std::int64_t> ints;
  float f = 0;
  std::string s;
};

struct Node {
  std::string op;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::string output;
  std::vector<Attribute> attributes;
};

enum class DataType { Float, Float16, Int64 };

struct Initializer {
  std::string name;
  DataType type = DataType::Float;
  std::vector<std::int64_t> dims;
  std::string raw;  // little-endian element bytes
};

struct Model {
  std::int64_t ir_version = 8;
  std::int64_t opset = 17;
  std::string producer = "atelier";
  std::string doc;
  std::string graph_name;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string input, output;  // one float32 input and output
  std::vector<std::int64_t> input_shape, output_shape;
  std::vector<Node> nodes;
  std::vector<Initializer> initializers;
};

// ModelProto bytes of `model`, validated by the ONNX checker first; std::runtime_error with the
// checker's message otherwise.
std::string serialize(const Model& model);

// What a serialized model says about itself (parsed back with the protobuf classes).
struct Summary {
  std::int64_t ir_version = 0;
  std::int64_t opset = 0;  // of the default domain
  std::int64_t nodes = 0;
  std::int64_t initializers = 0;
  std::vector<std::int64_t> input_shape, output_shape;
  std::vector<std::string> op_types;  // distinct, sorted
  bool fp16_weights = false;          // any FLOAT16 initializer
};
// std::runtime_error when the bytes are not a ModelProto.
Summary summarize(const std::string& bytes);
// Runs the ONNX checker on serialized bytes; std::runtime_error with its message when it fails.
void check(const std::string& bytes);

}  // namespace atelier::onnx_proto
