// libbpf operations by file descriptor: load objects (maps pinned by name under a folder,
// reused when already pinned), create/update/detach bpf_links, pin/get objects, map access
// with Buffer keys and values, and object info for adoption checks.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <new>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "ops.h"
#include "worker.h"

namespace skein {
namespace {

// libbpf's log lines (including the verifier log) of the current thread, attached to the
// error when a load fails.
thread_local std::string t_libbpfLog;

int CaptureLibbpfLog(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  int n = vsnprintf(line, sizeof(line), format, args);
  t_libbpfLog.append(line);
  if (t_libbpfLog.size() > 16384) t_libbpfLog.erase(0, t_libbpfLog.size() - 16384);
  return n;
}

// Loaded objects stay open (their program and map fds stay valid) until closeObject.
std::map<uint32_t, bpf_object*> g_objects;
uint32_t g_nextHandle = 1;

template <typename F>
auto Sync(const Napi::CallbackInfo& info, F body) -> decltype(body()) {
  try {
    return body();
  } catch (const NativeFailure& f) {
    throw ToJsError(info.Env(), f);
  } catch (const std::bad_alloc&) {
    // Never let an allocation failure escape a JS call as a C++ exception (abort).
    throw ToJsError(info.Env(), NativeFailure{ENOMEM, "alloc", "native buffer"});
  }
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) throw ArgError(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) throw ArgError(info.Env(), std::string(name) + " must be a number");
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > 0x7fffffff) throw ArgError(info.Env(), std::string(name) + " out of range");
  return static_cast<int>(v);
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw ArgError(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

// libbpf returns -errno (1.x); errno holds the same value.
void Check(int ret, const char* call, const std::string& detail = "") {
  if (ret < 0) Fail(-ret, call, detail);
}

struct LoadResult {
  uint32_t handle = 0;
  std::vector<std::pair<std::string, int>> programs;
  std::vector<std::pair<std::string, int>> maps;
};

// loadObject(objectPath, mapPinDir) -> Promise<{handle, programs: {name: fd}, maps: {name: fd}}>
Napi::Value LoadObject(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "objectPath");
  std::string pinDir = StringArg(info, 1, "mapPinDir");
  auto result = std::make_shared<LoadResult>();
  auto object = std::make_shared<bpf_object*>(nullptr);
  return PromiseWorker::Start(
      info.Env(), false,
      [=]() {
        t_libbpfLog.clear();
        LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pinDir.c_str());
        bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
        if (!obj) Fail(errno, "bpf_object__open_file", path + "\n" + t_libbpfLog);
        int err = bpf_object__load(obj);
        if (err) {
          bpf_object__close(obj);
          Fail(-err, "bpf_object__load", path + "\n" + t_libbpfLog);
        }
        bpf_program* prog;
        bpf_object__for_each_program(prog, obj) {
          result->programs.emplace_back(bpf_program__name(prog), bpf_program__fd(prog));
        }
        bpf_map* map;
        bpf_object__for_each_map(map, obj) { result->maps.emplace_back(bpf_map__name(map), bpf_map__fd(map)); }
        *object = obj;
      },
      [=](Napi::Env env) {
        uint32_t handle = g_nextHandle++;
        g_objects[handle] = *object;
        Napi::Object out = Napi::Object::New(env);
        out.Set("handle", handle);
        Napi::Object programs = Napi::Object::New(env);
        for (auto& p : result->programs) programs.Set(p.first, p.second);
        Napi::Object maps = Napi::Object::New(env);
        for (auto& m : result->maps) maps.Set(m.first, m.second);
        out.Set("programs", programs);
        out.Set("maps", maps);
        return out;
      });
}

// closeObject(handle): closes the object's program and map fds (links keep programs alive).
Napi::Value CloseObject(const Napi::CallbackInfo& info) {
  uint32_t handle = static_cast<uint32_t>(FdArg(info, 0, "handle"));
  auto it = g_objects.find(handle);
  if (it != g_objects.end()) {
    bpf_object__close(it->second);
    g_objects.erase(it);
  }
  return info.Env().Undefined();
}

bool AttachTypeOf(const std::string& name, bpf_attach_type* out) {
  if (name == "connect4") *out = BPF_CGROUP_INET4_CONNECT;
  else if (name == "connect6") *out = BPF_CGROUP_INET6_CONNECT;
  else if (name == "sock_ops") *out = BPF_CGROUP_SOCK_OPS;
  else return false;
  return true;
}

// attachCgroup(progFd, cgroupPath, "connect4"|"connect6"|"sock_ops") -> link fd
Napi::Value AttachCgroup(const Napi::CallbackInfo& info) {
  int prog = FdArg(info, 0, "progFd");
  std::string path = StringArg(info, 1, "cgroupPath");
  std::string typeName = StringArg(info, 2, "attachType");
  bpf_attach_type type;
  if (!AttachTypeOf(typeName, &type)) throw ArgError(info.Env(), "unknown cgroup attach type: " + typeName);
  return Sync(info, [&]() {
    int cg = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0) Fail(errno, "open", path);
    int link = bpf_link_create(prog, cg, type, nullptr);
    int err = errno;
    close(cg);
    if (link < 0) Fail(err, "bpf_link_create", typeName + " at " + path);
    return Napi::Number::New(info.Env(), link);
  });
}

// attachNetns(progFd, netnsPath) -> link fd of an sk_lookup program in that namespace.
Napi::Value AttachNetns(const Napi::CallbackInfo& info) {
  int prog = FdArg(info, 0, "progFd");
  std::string path = StringArg(info, 1, "netnsPath");
  return Sync(info, [&]() {
    int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) Fail(errno, "open", path);
    int link = bpf_link_create(prog, ns, BPF_SK_LOOKUP, nullptr);
    int err = errno;
    close(ns);
    if (link < 0) Fail(err, "bpf_link_create", "sk_lookup in " + path);
    return Napi::Number::New(info.Env(), link);
  });
}

// linkUpdate(linkFd, newProgFd): atomically swap the program behind a link.
Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  int link = FdArg(info, 0, "linkFd");
  int prog = FdArg(info, 1, "progFd");
  return Sync(info, [&]() {
    Check(bpf_link_update(link, prog, nullptr), "bpf_link_update");
    return info.Env().Undefined();
  });
}

// linkDetach(linkFd): detach now, whoever else holds the link or its pin.
Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  int link = FdArg(info, 0, "linkFd");
  return Sync(info, [&]() {
    Check(bpf_link_detach(link), "bpf_link_detach");
    return info.Env().Undefined();
  });
}

// objPin(fd, path)
Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "fd");
  std::string path = StringArg(info, 1, "path");
  return Sync(info, [&]() {
    if (bpf_obj_pin(fd, path.c_str()) < 0) Fail(errno, "bpf_obj_pin", path);
    return info.Env().Undefined();
  });
}

// objGet(path) -> fd of a pinned object
Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return Sync(info, [&]() {
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) Fail(errno, "bpf_obj_get", path);
    return Napi::Number::New(info.Env(), fd);
  });
}

// linkInfo(fd) -> {id, progId, type, attachType?, cgroupId?, netnsIno?}
Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "linkFd");
  return Sync(info, [&]() {
    bpf_link_info li{};
    uint32_t len = sizeof(li);
    if (bpf_obj_get_info_by_fd(fd, &li, &len) < 0) Fail(errno, "bpf_obj_get_info_by_fd", "link");
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("id", li.id);
    out.Set("progId", li.prog_id);
    out.Set("type", li.type);
    if (li.type == BPF_LINK_TYPE_CGROUP) {
      out.Set("attachType", li.cgroup.attach_type);
      out.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(li.cgroup.cgroup_id)));
    } else if (li.type == BPF_LINK_TYPE_NETNS) {
      out.Set("attachType", li.netns.attach_type);
      out.Set("netnsIno", li.netns.netns_ino);
    }
    return out;
  });
}

// progInfo(fd) -> {id, name, type, tag}
Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "progFd");
  return Sync(info, [&]() {
    bpf_prog_info pi{};
    uint32_t len = sizeof(pi);
    if (bpf_obj_get_info_by_fd(fd, &pi, &len) < 0) Fail(errno, "bpf_obj_get_info_by_fd", "prog");
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("id", pi.id);
    out.Set("name", std::string(pi.name));
    out.Set("type", pi.type);
    char tag[2 * BPF_TAG_SIZE + 1];
    for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
    out.Set("tag", std::string(tag));
    return out;
  });
}

// The sizes every map call checks against must be a map's: bpf_obj_get_info_by_fd answers
// for programs, links and BTF too, writing *their* info into a bpf_map_info (a program's tag
// would read as key_size/value_size, and a lookup would allocate whatever that says). The
// kernel names the fd's anon inode; anything but a map is EBADF before any map syscall.
void CheckIsMap(int fd) {
  char link[64];
  char target[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n < 0) {
    if (errno == ENOENT) Fail(EBADF, "mapInfo", "fd " + std::to_string(fd) + " is not open");
    return;  // no /proc: the kernel's own type check in each map syscall still applies
  }
  target[n] = '\0';
  if (strcmp(target, "anon_inode:bpf-map") != 0)
    Fail(EBADF, "mapInfo", "fd " + std::to_string(fd) + " is not a BPF map (" + target + ")");
}

bpf_map_info MapInfoOf(int fd) {
  CheckIsMap(fd);
  bpf_map_info mi{};
  uint32_t len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len) < 0) Fail(errno, "bpf_obj_get_info_by_fd", "map");
  mi.name[sizeof(mi.name) - 1] = '\0';  // read as a C string below
  return mi;
}

// mapInfo(fd) -> {id, name, type, keySize, valueSize, maxEntries}
Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  return Sync(info, [&]() {
    bpf_map_info mi = MapInfoOf(fd);
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("id", mi.id);
    out.Set("name", std::string(mi.name));
    out.Set("type", mi.type);
    out.Set("keySize", mi.key_size);
    out.Set("valueSize", mi.value_size);
    out.Set("maxEntries", mi.max_entries);
    return out;
  });
}

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Bytes of a value as user space reads and writes it: per-CPU maps take one slot per
// possible CPU, each rounded up to 8 bytes (the kernel writes all of them on lookup).
size_t ValueBytes(const bpf_map_info& mi) {
  if (!IsPerCpu(mi.type)) return mi.value_size;
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) Fail(-cpus, "libbpf_num_possible_cpus");
  return static_cast<size_t>(cpus) * ((mi.value_size + 7) / 8 * 8);
}

// Every map operation checks the caller's sizes against the map's own before the kernel
// reads or writes a byte: a short buffer would otherwise be over-read (key, update value)
// or over-written (lookup value) by the kernel.
Napi::Error SizeMismatch(Napi::Env env, const char* code, const char* what, size_t got, size_t want,
                         const bpf_map_info& mi) {
  Napi::Error error = Napi::RangeError::New(env, std::string(what) + " is " + std::to_string(got) + " bytes, map " +
                                                     mi.name + " wants " + std::to_string(want));
  error.Set("code", Napi::String::New(env, code));
  error.Set("map", Napi::String::New(env, mi.name));
  error.Set("expected", Napi::Number::New(env, static_cast<double>(want)));
  error.Set("actual", Napi::Number::New(env, static_cast<double>(got)));
  return error;
}

void CheckKey(const Napi::CallbackInfo& info, const bpf_map_info& mi, size_t keyLen) {
  if (keyLen != mi.key_size)
    throw SizeMismatch(info.Env(), "SKEIN_NATIVE_KEY_SIZE_MISMATCH", "key", keyLen, mi.key_size, mi);
}

void CheckValue(const Napi::CallbackInfo& info, const bpf_map_info& mi, size_t valueLen) {
  size_t want = ValueBytes(mi);
  if (valueLen != want)
    throw SizeMismatch(info.Env(), "SKEIN_NATIVE_VALUE_SIZE_MISMATCH", "value", valueLen, want, mi);
}

// mapLookup(fd, key) -> Buffer | null (per-CPU maps: every CPU's slot, 8-byte aligned)
Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  return Sync(info, [&]() -> Napi::Value {
    bpf_map_info mi = MapInfoOf(fd);
    CheckKey(info, mi, key.Length());
    std::vector<uint8_t> value(ValueBytes(mi));
    if (bpf_map_lookup_elem(fd, key.Data(), value.data()) < 0) {
      if (errno == ENOENT) return info.Env().Null();
      Fail(errno, "bpf_map_lookup_elem", mi.name);
    }
    return Napi::Buffer<uint8_t>::Copy(info.Env(), value.data(), value.size());
  });
}

// mapLookupAndDelete(fd, key, valueSize) -> Buffer | null: read and remove in one map
// syscall, for per-connection hot paths. The caller states the value size it will decode;
// key and value sizes are checked against the map's (one cheap info syscall) first.
Napi::Value MapLookupAndDelete(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  int valueSize = FdArg(info, 2, "valueSize");
  return Sync(info, [&]() -> Napi::Value {
    bpf_map_info mi = MapInfoOf(fd);
    CheckKey(info, mi, key.Length());
    CheckValue(info, mi, static_cast<size_t>(valueSize));
    std::vector<uint8_t> value(static_cast<size_t>(valueSize));
    if (bpf_map_lookup_and_delete_elem(fd, key.Data(), value.data()) < 0) {
      if (errno == ENOENT) return info.Env().Null();
      Fail(errno, "bpf_map_lookup_and_delete_elem", mi.name);
    }
    return Napi::Buffer<uint8_t>::Copy(info.Env(), value.data(), value.size());
  });
}

// mapUpdate(fd, key, value, flags = BPF_ANY) (per-CPU maps: every CPU's slot, 8-byte aligned)
Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  auto value = BufferArg(info, 2, "value");
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : static_cast<int64_t>(BPF_ANY);
  return Sync(info, [&]() {
    bpf_map_info mi = MapInfoOf(fd);
    CheckKey(info, mi, key.Length());
    CheckValue(info, mi, value.Length());
    if (bpf_map_update_elem(fd, key.Data(), value.Data(), flags) < 0) Fail(errno, "bpf_map_update_elem", mi.name);
    return info.Env().Undefined();
  });
}

// mapDelete(fd, key) -> true when an entry was removed, false when there was none
Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  auto key = BufferArg(info, 1, "key");
  return Sync(info, [&]() {
    bpf_map_info mi = MapInfoOf(fd);
    CheckKey(info, mi, key.Length());
    if (bpf_map_delete_elem(fd, key.Data()) < 0) {
      if (errno == ENOENT) return Napi::Boolean::New(info.Env(), false);
      Fail(errno, "bpf_map_delete_elem", mi.name);
    }
    return Napi::Boolean::New(info.Env(), true);
  });
}

// mapNextKey(fd, key | null) -> Buffer | null (iteration: start with null)
Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "mapFd");
  bool first = info.Length() < 2 || info[1].IsNull() || info[1].IsUndefined();
  return Sync(info, [&]() -> Napi::Value {
    bpf_map_info mi = MapInfoOf(fd);
    std::vector<uint8_t> next(mi.key_size);
    const void* cur = nullptr;
    Napi::Buffer<uint8_t> key;
    if (!first) {
      key = BufferArg(info, 1, "key");
      CheckKey(info, mi, key.Length());
      cur = key.Data();
    }
    if (bpf_map_get_next_key(fd, cur, next.data()) < 0) {
      if (errno == ENOENT) return info.Env().Null();
      Fail(errno, "bpf_map_get_next_key", mi.name);
    }
    return Napi::Buffer<uint8_t>::Copy(info.Env(), next.data(), next.size());
  });
}

}  // namespace

void RegisterBpfOps(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(CaptureLibbpfLog);
  exports.Set("loadObject", Napi::Function::New(env, LoadObject, "loadObject"));
  exports.Set("closeObject", Napi::Function::New(env, CloseObject, "closeObject"));
  exports.Set("attachCgroup", Napi::Function::New(env, AttachCgroup, "attachCgroup"));
  exports.Set("attachNetns", Napi::Function::New(env, AttachNetns, "attachNetns"));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate, "linkUpdate"));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach, "linkDetach"));
  exports.Set("objPin", Napi::Function::New(env, ObjPin, "objPin"));
  exports.Set("objGet", Napi::Function::New(env, ObjGet, "objGet"));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo, "linkInfo"));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo, "progInfo"));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo, "mapInfo"));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup, "mapLookup"));
  exports.Set("mapLookupAndDelete", Napi::Function::New(env, MapLookupAndDelete, "mapLookupAndDelete"));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate, "mapUpdate"));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete, "mapDelete"));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey, "mapNextKey"));
}

}  // namespace skein
