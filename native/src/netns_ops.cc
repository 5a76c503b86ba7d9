// Sockets created inside another network namespace, and netns cookies.
// Every call that enters a namespace does so on a thread created for that call
// (PromiseWorker dedicated=true); the thread ends afterwards, so no other work ever runs
// in the pod's namespace by accident.
// Nothing here waits on the network: connects from a pod's netns take an unconnected socket
// (openSocket) and connect it on Node's event loop (src/capture/netns-connect.ts). A blocking
// connect (poll() on a libuv pool thread, as connectInNetns once did) let one pod connecting
// to a SYN-dropping address take the 4-thread pool and stall every pod on the node.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "errors.h"
#include "ops.h"
#include "worker.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace skein {
namespace {

void EnterNetns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(errno, "open", path);
  if (setns(fd, CLONE_NEWNET) < 0) {
    int err = errno;
    close(fd);
    Fail(err, "setns", path);
  }
  close(fd);
}

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = 0;
};

bool ParseAddress(const std::string& host, uint16_t port, SocketAddress* out) {
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->length = sizeof(sockaddr_in);
    out->family = AF_INET;
    return true;
  }
  std::memset(&out->storage, 0, sizeof(out->storage));
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->length = sizeof(sockaddr_in6);
    out->family = AF_INET6;
    return true;
  }
  return false;
}

// A TCP socket, closed on unwind unless released.
struct OwnedFd {
  int fd = -1;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
  int Release() {
    int out = fd;
    fd = -1;
    return out;
  }
};

int NewTcpSocket(int family, uint32_t mark) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) Fail(errno, "socket");
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) {
    int err = errno;
    close(fd);
    Fail(err, "setsockopt(SO_MARK)");
  }
  return fd;
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) throw ArgError(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

uint32_t UintArg(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t max) {
  if (info.Length() <= i || !info[i].IsNumber()) throw ArgError(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > max || v != static_cast<double>(static_cast<uint32_t>(v)))
    throw ArgError(info.Env(), std::string(name) + " out of range");
  return static_cast<uint32_t>(v);
}

// openListener(netnsPath, address, port, backlog) -> Promise<fd>
Napi::Value OpenListener(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "netnsPath");
  std::string host = StringArg(info, 1, "address");
  uint16_t port = static_cast<uint16_t>(UintArg(info, 2, "port", 65535));
  int backlog = static_cast<int>(UintArg(info, 3, "backlog", 65535));
  SocketAddress addr;
  if (!ParseAddress(host, port, &addr)) throw ArgError(info.Env(), "address is not an IP address: " + host);
  auto fd = std::make_shared<int>(-1);
  return PromiseWorker::Start(
      info.Env(), true,
      [=]() {
        EnterNetns(path);
        OwnedFd sock{NewTcpSocket(addr.family, 0)};
        int one = 1;
        if (setsockopt(sock.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) Fail(errno, "setsockopt(SO_REUSEADDR)");
        if (addr.family == AF_INET6) {
          // The wildcard accepts IPv4 too (one listener for both families); a specific
          // IPv6 address listens on IPv6 only.
          const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&addr.storage);
          int v6only = IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr) ? 0 : 1;
          if (setsockopt(sock.fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
            Fail(errno, "setsockopt(IPV6_V6ONLY)");
        }
        if (bind(sock.fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.length) < 0)
          Fail(errno, "bind", host + ":" + std::to_string(port) + " in " + path);
        if (listen(sock.fd, backlog) < 0) Fail(errno, "listen");
        *fd = sock.Release();
      },
      [fd](Napi::Env env) { return Napi::Number::New(env, *fd); });
}

// openSocket(netnsPath, family 4|6, mark) -> Promise<fd> of an unconnected TCP socket.
Napi::Value OpenSocket(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "netnsPath");
  uint32_t family = UintArg(info, 1, "family", 6);
  if (family != 4 && family != 6) throw ArgError(info.Env(), "family must be 4 or 6");
  uint32_t mark = UintArg(info, 2, "mark", 0xffffffffu);
  auto fd = std::make_shared<int>(-1);
  return PromiseWorker::Start(
      info.Env(), true,
      [=]() {
        EnterNetns(path);
        *fd = NewTcpSocket(family == 4 ? AF_INET : AF_INET6, mark);
      },
      [fd](Napi::Env env) { return Napi::Number::New(env, *fd); });
}

uint64_t CookieOf(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0) Fail(errno, "getsockopt(SO_NETNS_COOKIE)");
  return cookie;
}

// netnsCookie(netnsPath) -> Promise<bigint>
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "netnsPath");
  auto cookie = std::make_shared<uint64_t>(0);
  return PromiseWorker::Start(
      info.Env(), true,
      [=]() {
        EnterNetns(path);
        // Any socket carries its namespace's cookie; a unix one needs no IP stack.
        OwnedFd sock{socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
        if (sock.fd < 0) Fail(errno, "socket");
        *cookie = CookieOf(sock.fd);
      },
      [cookie](Napi::Env env) { return Napi::BigInt::New(env, *cookie); });
}

// socketNetnsCookie(fd) -> bigint: the namespace of a socket the process already holds.
Napi::Value SocketNetnsCookie(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(UintArg(info, 0, "fd", 0x7fffffff));
  try {
    return Napi::BigInt::New(info.Env(), CookieOf(fd));
  } catch (const NativeFailure& f) {
    throw ToJsError(info.Env(), f);
  }
}

// mountBpffs(path): mount a bpf filesystem at path (mode 0700).
Napi::Value MountBpffs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  if (mount("bpf", path.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0)
    throw ToJsError(info.Env(), NativeFailure{errno, "mount", path});
  return info.Env().Undefined();
}

// closeFd(fd)
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(UintArg(info, 0, "fd", 0x7fffffff));
  if (close(fd) < 0) throw ToJsError(info.Env(), NativeFailure{errno, "close", std::to_string(fd)});
  return info.Env().Undefined();
}

// socketPair() -> [fd, fd]: a connected AF_UNIX stream pair in this process, non-blocking and
// close-on-exec. The agent carries same-node HTTP/2 sessions on it: kernel sockets, so Node
// serves both ends natively, and no address anyone else could connect to.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
    throw ToJsError(info.Env(), NativeFailure{errno, "socketpair", "AF_UNIX"});
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  out.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return out;
}

}  // namespace

void RegisterNetnsOps(Napi::Env env, Napi::Object exports) {
  exports.Set("openListener", Napi::Function::New(env, OpenListener, "openListener"));
  exports.Set("openSocket", Napi::Function::New(env, OpenSocket, "openSocket"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("socketNetnsCookie", Napi::Function::New(env, SocketNetnsCookie, "socketNetnsCookie"));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs, "mountBpffs"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
}

}  // namespace skein
