// The uniform kernel ABI of the simulated Ascend device (issue 5).
//
// A kernel is `void fn(const KernelCall&)`. It gets typed, range-checked views of its device buffers
// (in launch order), its scalar arguments (all dims are scalars, never hard-coded), the math mode and
// the "parts" count. Every kernels/*.cpp file registers its own kernels with DS4_KERNEL, so adding a
// family never edits a central list.
//
// Launch model, as in ds4-ascend (catalog §10): each AscendC kernel is launched once per part
// (p < parts, parts = DS4_ASCEND_KERNEL_PARTS, default 32); part p handles the output indices
// i ≡ p (mod parts), and each output element is reduced serially, in index order, by its part.
// for_each_index() reproduces exactly that ownership, so reductions have the device's order. (No
// ds4-ascend kernel at 7f1d55b splits one output's reduction across parts; a kernel that did would
// keep per-part partial sums and combine them in part order.)
//
// Device memory sanitizer: a kernel must declare every range it touches through in()/out()/inout()
// BEFORE touching it. The device checks the range against the buffer at that moment (on the stream's
// worker thread): a freed buffer (poisoned, quarantined) or an out-of-bounds range raises a
// KernelFault naming the kernel, the buffer id/tag and the byte offset (declare ranges on the calling
// thread, before run_parts/for_each_index); the stream records the fault and
// synchronize() rethrows it to JS. Freeing a buffer that a launch named before the host synchronized
// with that launch (synchronize(), or waiting on an event recorded after it) is reported as that
// kernel's use-after-free even if the simulator happened to finish the kernel first: on the real
// asynchronous stream it may still be reading (the seeds' RoPE-table bug). The same declarations
// feed the bytes-read/written statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ds4 {

// 'ascend' = the AscendC kernels' approximations (ascend_math.h); 'exact' = libm / IEEE behaviour.
enum class MathMode { Ascend, Exact };

// A device buffer bound to one argument slot of a launch.
struct BufferArg {
  uint32_t id = 0;          // device handle (what JS holds)
  std::string tag;          // allocation tag, for messages
  uint8_t *data = nullptr;  // arena address (the host/JS side never sees it)
  size_t bytes = 0;         // allocation size
};

// Raised by a range check inside a kernel; message is the user-facing sanitizer report.
struct KernelFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Access { Read, Write, ReadWrite };

class KernelCall {
 public:
  const char *kernel = "";  // registered name, for messages
  std::vector<BufferArg> bufs;
  std::vector<double> scalars;
  MathMode mode = MathMode::Ascend;
  int parts = 32;
  static constexpr int64_t kSerialPartsBelow = 4096;
  // Filled by the checks: bytes the kernel declared to read / write (stats).
  mutable uint64_t bytes_in = 0, bytes_out = 0;
  // Runs body(p) for p in [0, parts); the device may run parts on several host threads, which is
  // safe because parts own disjoint output indices. Set by the device.
  std::function<void(int, const std::function<void(int)> &)> run_parts_impl;
  void *device_ctx = nullptr;  // the device's live buffer table, consulted by every range check

  // Typed views: elements [first, first + count) of buffer argument `arg`, as T.
  template <class T>
  const T *in(int arg, size_t first, size_t count) const {
    return reinterpret_cast<const T *>(check(arg, first * sizeof(T), count * sizeof(T), Access::Read));
  }
  template <class T>
  T *out(int arg, size_t first, size_t count) const {
    return reinterpret_cast<T *>(check(arg, first * sizeof(T), count * sizeof(T), Access::Write));
  }
  template <class T>
  T *inout(int arg, size_t first, size_t count) const {
    return reinterpret_cast<T *>(check(arg, first * sizeof(T), count * sizeof(T), Access::ReadWrite));
  }
  // Byte size of buffer argument `arg` (for kernels that size a view from the allocation).
  size_t bytes(int arg) const;
  size_t nbufs() const { return bufs.size(); }

  // Scalar argument k as integer / float / double (a missing scalar is a launch error).
  int64_t i(int k) const { return static_cast<int64_t>(scalar(k)); }
  float f(int k) const { return static_cast<float>(scalar(k)); }
  double d(int k) const { return scalar(k); }
  size_t nscalars() const { return scalars.size(); }
  // Optional scalar with a default (for trailing arguments).
  double d_or(int k, double dflt) const { return k < (int)scalars.size() ? scalars[k] : dflt; }

  bool exact() const { return mode == MathMode::Exact; }

  // Run body(p) for every part p (possibly in parallel).
  void run_parts(const std::function<void(int)> &body) const;

  // The AscendC parts-strided ownership: body(i) for every i in [0, total), part p doing
  // i = p, p + parts, p + 2·parts, ...
  template <class F>
  void for_each_index(int64_t total, F &&body) const {
    const int np = parts < 1 ? 1 : parts;
    auto part = [&](int p) {
      for (int64_t idx = p; idx < total; idx += np) body(idx);
    };
    // Small launches run their parts on the stream thread (same ownership, same results).
    if (total < kSerialPartsBelow) for (int p = 0; p < np; p++) part(p);
    else run_parts(part);
  }

  // Throws KernelFault("<kernel>: <msg>").
  [[noreturn]] void fail(const std::string &msg) const;

 private:
  uint8_t *check(int arg, size_t byte_off, size_t nbytes, Access access) const;  // native/src/device.cc
  double scalar(int k) const;
};

using KernelFn = void (*)(const KernelCall &);

struct KernelInfo {
  std::string name;    // launch name, e.g. "matmul_f16" (the AscendC kernel is ds4_<name>)
  KernelFn fn;
  std::string doc;     // one line: arguments and what it computes
  std::string stages;  // comma-separated registry stage names it produces
};

// The global table, filled by static registrars before the addon's init runs.
std::vector<KernelInfo> &kernel_registry();

struct KernelRegistrar {
  KernelRegistrar(const char *name, KernelFn fn, const char *doc, const char *stages) {
    kernel_registry().push_back(KernelInfo{name, fn, doc, stages});
  }
};

}  // namespace ds4

// DS4_KERNEL("matmul_f16", matmul_f16, "bufs: out f32, w f16, x f32; scalars: in_dim, out_dim, n_tok",
//            "q_lora,hc_attn_pre_mixes")
#define DS4_KERNEL(name, fn, doc, stages) \
  static const ::ds4::KernelRegistrar ds4_kernel_registrar_##fn(name, fn, doc, stages)
