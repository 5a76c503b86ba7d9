#include "errors.h"

#include <string.h>

namespace skein {

void Fail(int err, const std::string& syscall, const std::string& detail) {
  throw NativeFailure{err, syscall, detail};
}

static std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? std::string(name) : "E" + std::to_string(err);
}

Napi::Error ToJsError(Napi::Env env, const NativeFailure& f) {
  std::string message = f.syscall + " failed: " + strerror(f.err) + " (" + ErrnoName(f.err) + ")";
  if (!f.detail.empty()) message += ": " + f.detail;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(f.err)));
  error.Set("errno", Napi::Number::New(env, -f.err));
  error.Set("syscall", Napi::String::New(env, f.syscall));
  return error;
}

Napi::Error ArgError(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "SKEIN_NATIVE_ARG"));
  return error;
}

}  // namespace skein
