#pragma once
#include <napi.h>
namespace skein {
void RegisterNetnsOps(Napi::Env env, Napi::Object exports);
void RegisterBpfOps(Napi::Env env, Napi::Object exports);
void RegisterFdPassingOps(Napi::Env env, Napi::Object exports);
}  // namespace skein
