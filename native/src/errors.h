// Failures of kernel calls, carried from worker threads to JS as Error{code, errno, syscall}.
#pragma once

#include <napi.h>

#include <string>

namespace skein {

// A failed system or libbpf call. `err` is a positive errno value.
struct NativeFailure {
  int err;
  std::string syscall;
  std::string detail;  // the path or object involved, and any libbpf log lines
};

// Throws NativeFailure (callable from any thread; no JS values involved).
[[noreturn]] void Fail(int err, const std::string& syscall, const std::string& detail = "");

// JS Error with code = errno name (e.g. "ENOENT"), errno = -err (Node's convention), syscall.
Napi::Error ToJsError(Napi::Env env, const NativeFailure& failure);

// TypeError with code SKEIN_NATIVE_ARG for a bad argument from JS.
Napi::Error ArgError(Napi::Env env, const std::string& message);

}  // namespace skein
