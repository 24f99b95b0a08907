// Error type of the engine. Engine code throws with context (the file, key, field or value at fault);
// the job runner / CLI / GUI catch once at their boundary and show the message as one line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace atelier {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates the parts with operator<< and throws Error: fail("file ", path, ": bad header").
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

// An Error about one field of a job or config: the field's name travels as data, so a client can mark
// the field (the GUI's forms) without reading the message. what() reads "field 'name': ...".
class FieldError : public Error {
 public:
  FieldError(std::string field, const std::string& message) : Error(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// fail_field("steps", "must be positive") throws FieldError "field 'steps': must be positive".
template <class... Parts>
[[noreturn]] void fail_field(const std::string& field, Parts&&... parts) {
  std::ostringstream os;
  os << "field '" << field << "': ";
  (os << ... << std::forward<Parts>(parts));
  throw FieldError(field, os.str());
}

// Prefixes an in-flight Error with context ("reading x.safetensors: ...") and rethrows it.
template <class F, class... Parts>
decltype(auto) with_context(F&& f, Parts&&... parts) {
  try {
    return f();
  } catch (const FieldError& e) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw FieldError(e.field(), os.str() + ": " + e.what());
  } catch (const Error& e) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw Error(os.str() + ": " + e.what());
  }
}

// Runs f(); an Error thrown inside (a bad file the field names, say) becomes a FieldError of `field`:
// "field 'base': <the error>". A FieldError that already names `field` passes unchanged.
template <class F>
decltype(auto) with_field(const std::string& field, F&& f) {
  try {
    return f();
  } catch (const FieldError& e) {
    if (e.field() == field) throw;
    throw FieldError(field, "field '" + field + "': " + e.what());
  } catch (const Error& e) {
    throw FieldError(field, "field '" + field + "': " + e.what());
  }
}

}  // namespace atelier
