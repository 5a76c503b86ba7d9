// Passing open sockets between agent processes (SCM_RIGHTS over an AF_UNIX stream socket):
// the agent upgrade hands the pods' listening sockets from the old agent to the new one, so
// the sockets themselves never close and no SYN ever finds no listener (see
// src/agent/handover.ts for why this and not new sockets swapped into the maps).
//
// All three calls are synchronous and bounded: they run once per upgrade, on a local unix
// socket whose peer is another agent on this node, while the calling agent serves nothing
// that could wait on its event loop (the new agent before it serves; the old agent only writes
// a few hundred bytes the kernel buffers at once).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "ops.h"

namespace skein {
namespace {

// Linux's SCM_MAX_FD: more fds than this in one message are refused by the kernel.
constexpr size_t kMaxFdsPerMessage = 253;

int IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int max) {
  if (info.Length() <= i || !info[i].IsNumber()) throw ArgError(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > max || v != static_cast<double>(static_cast<int>(v))) throw ArgError(info.Env(), std::string(name) + " out of range");
  return static_cast<int>(v);
}

// Waits until fd is ready for `events` or the deadline passes (ETIMEDOUT).
void WaitFor(int fd, short events, std::chrono::steady_clock::time_point deadline, const char* what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) Fail(ETIMEDOUT, what);
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) Fail(errno, "poll");
    if (r > 0) return;
  }
}

// connectUnix(path) -> fd: a connected AF_UNIX stream socket (blocking, close-on-exec).
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw ArgError(info.Env(), "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) throw ArgError(info.Env(), "path too long for a unix socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ToJsError(info.Env(), NativeFailure{errno, "socket", "AF_UNIX"});
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    int err = errno;
    close(fd);
    throw ToJsError(info.Env(), NativeFailure{err, "connect", path});
  }
  return Napi::Number::New(info.Env(), fd);
}

// sendFds(sockFd, data, fds, timeoutMs): one sendmsg carrying `data` and `fds` (SCM_RIGHTS).
// The kernel keeps the fds with the first byte of `data`, so a reader that reads message by
// message knows which fds came with which bytes.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = IntArg(info, 0, "sockFd", 0x7fffffff);
  if (info.Length() < 2 || !info[1].IsBuffer()) throw ArgError(env, "data must be a Buffer");
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  if (data.Length() == 0) throw ArgError(env, "data must not be empty");
  if (info.Length() < 3 || !info[2].IsArray()) throw ArgError(env, "fds must be an array");
  auto arr = info[2].As<Napi::Array>();
  if (arr.Length() > kMaxFdsPerMessage) throw ArgError(env, "at most 253 fds per message");
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsNumber()) throw ArgError(env, "fds must be numbers");
    fds.push_back(v.As<Napi::Number>().Int32Value());
  }
  int timeoutMs = IntArg(info, 3, "timeoutMs", 3600000);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  try {
    size_t sent = 0;
    while (sent < data.Length()) {
      iovec iov{data.Data() + sent, data.Length() - sent};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      std::vector<char> control;
      if (sent == 0 && !fds.empty()) {
        control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
      }
      ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          WaitFor(sock, POLLOUT, deadline, "sendmsg");
          continue;
        }
        Fail(errno, "sendmsg");
      }
      sent += static_cast<size_t>(n);
    }
  } catch (const NativeFailure& f) {
    throw ToJsError(env, f);
  }
  return env.Undefined();
}

// recvFds(sockFd, maxBytes, timeoutMs) -> { data: Buffer, fds: number[] }: one recvmsg, with
// the fds that came with those bytes (close-on-exec). An empty data Buffer means the peer
// closed. ETIMEDOUT when nothing arrives in time.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = IntArg(info, 0, "sockFd", 0x7fffffff);
  int maxBytes = IntArg(info, 1, "maxBytes", 1 << 20);
  int timeoutMs = IntArg(info, 2, "timeoutMs", 3600000);
  if (maxBytes == 0) throw ArgError(env, "maxBytes must be above 0");
  std::vector<uint8_t> buf(static_cast<size_t>(maxBytes));
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage), 0);
  std::vector<int> fds;
  ssize_t n = 0;
  try {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    for (;;) {
      WaitFor(sock, POLLIN, deadline, "recvmsg");
      iovec iov{buf.data(), buf.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n < 0) Fail(errno, "recvmsg");
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (size_t i = 0; i < count; i++) fds.push_back(p[i]);
      }
      if ((msg.msg_flags & MSG_CTRUNC) != 0) {
        for (int fd : fds) close(fd);
        Fail(EMSGSIZE, "recvmsg", "control data truncated: fds lost");
      }
      break;
    }
  } catch (const NativeFailure& f) {
    throw ToJsError(env, f);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n)));
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  out.Set("fds", arr);
  return out;
}

}  // namespace

void RegisterFdPassingOps(Napi::Env env, Napi::Object exports) {
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
}

}  // namespace skein
