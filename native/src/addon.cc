// skein_native: the agent's door to the kernel (libbpf, setns, sockets). No policy here:
// which programs, maps, ports and namespaces is decided in src/capture/.
#include <napi.h>

#include "ops.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  skein::RegisterBpfOps(env, exports);
  skein::RegisterNetnsOps(env, exports);
  skein::RegisterFdPassingOps(env, exports);
  return exports;
}

NODE_API_MODULE(skein_native, Init)
