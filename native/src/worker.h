// Promise-returning background work. `dedicated` runs the work on a std::thread created for
// this call (and joined by the pool thread): required for setns, which changes the calling
// thread's namespace and must never touch a libuv pool thread that later runs other work.
#pragma once

#include <napi.h>

#include <functional>
#include <thread>

#include "errors.h"

namespace skein {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;                     // may throw NativeFailure
  using Resolve = std::function<Napi::Value(Napi::Env)>;  // runs on the JS thread

  static Napi::Promise Start(Napi::Env env, bool dedicated, Work work, Resolve resolve) {
    auto* worker = new PromiseWorker(env, dedicated, std::move(work), std::move(resolve));
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    auto run = [this]() {
      try {
        work_();
      } catch (const NativeFailure& f) {
        failure_ = f;
        failed_ = true;
      } catch (const std::exception& e) {
        failure_ = NativeFailure{EIO, "internal", e.what()};
        failed_ = true;
      }
    };
    if (dedicated_) {
      std::thread thread(run);
      thread.join();
    } else {
      run();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (failed_) {
      deferred_.Reject(ToJsError(env, failure_).Value());
      return;
    }
    try {
      deferred_.Resolve(resolve_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  PromiseWorker(Napi::Env env, bool dedicated, Work work, Resolve resolve)
      : Napi::AsyncWorker(env, "skein-native"),
        deferred_(Napi::Promise::Deferred::New(env)),
        dedicated_(dedicated),
        work_(std::move(work)),
        resolve_(std::move(resolve)) {}

  Napi::Promise::Deferred deferred_;
  bool dedicated_;
  Work work_;
  Resolve resolve_;
  bool failed_ = false;
  NativeFailure failure_{0, "", ""};
};

}  // namespace skein
