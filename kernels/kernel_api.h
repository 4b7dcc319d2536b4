// The kernel ABI of the simulated Ascend device: every kernel declares its signature ONCE, here in C++
// (DS4_KERNEL below), and everything else is derived from that declaration — the device's launch
// checks, the JS side's named launches, host read/write spans, the fallback ledger's bytes, fault
// targets and the kernel suite (`dev.kernels()` exports it).
//
// A signature has
//   scalars  names, in launch order ("in_dim, out_dim, n_tok");
//   buffers  "ROLE NAME DTYPE[COUNT] [@ OFFSET] [ring(LEN)] [mat(N, OFF, STRIDE)] [q8_0|q8_k] [experts]", ';'-separated:
//            ROLE    in (activation read) | weight (model tensor, read) | out (written) | inout (read and written);
//            DTYPE   f32 f16 i8 i32 u8 or a ggml block type q8_0 q2_k iq2_xxs (COUNT and OFFSET count elements);
//            COUNT/OFFSET/LEN/N/...  integer expressions of the scalars (+ - * / % == and parentheses);
//            the span [OFFSET, OFFSET+COUNT) is what the kernel may touch (and what a host twin reads or
//            writes); ring(LEN) makes it wrap modulo LEN elements (the raw KV ring);
//            mat(N, OFF, STRIDE): the span holds one N×N matrix at OFF of every STRIDE elements;
//            q8_0/q8_k: the kernel quantizes this f32 input to int8 in blocks of 32/256;
//            experts: whole expert slices, picked by the kernel's i32 `slot` buffer;
//   stages   the registry stages its launches produce;
//   approx   the named device operations it applies (ascend_math.h): exp rsqrt sqrt log (approximations),
//            round (float → int8), f16 (f16 store rounding), rope (rotates adjacent tail pairs);
//   budget   the largest NMSE of its output against its exact host twin on identical inputs, per kernel
//            math (ascend | exact), as ggml test-backend-ops' max_nmse_err(), derived from the arithmetic;
//            grows_per_pos(e): a relative error that grows by e per position of the row written (RoPE's
//            angles), so the budget at position p is (√max_nmse + e·p)² — tight at the first positions
//            instead of a worst case over the context.
//
// A kernel is `void fn(const KernelCall&)`; it reads its scalars and buffers by name. Launch model, as in
// ds4-ascend (catalog §10): each AscendC kernel is launched once per part (p < parts, default 32);
// part p handles the output indices i ≡ p (mod parts), each output reduced serially in index order by
// its part. for_each_index() reproduces that ownership, so reductions have the device's order.
//
// Device memory sanitizer: a kernel must declare every range it touches through in()/out() BEFORE
// touching it. The device checks the range against the signature's span and against the buffer at that
// moment (on the stream's worker thread): a freed buffer (poisoned, quarantined) or an out-of-bounds
// range raises a KernelFault naming the kernel, the buffer and the byte offset (declare ranges on the
// calling thread, before run_parts/for_each_index); synchronize() rethrows it to JS. Freeing a buffer
// that a launch named before the host synchronized with that launch is reported as that kernel's
// use-after-free even if the simulator happened to finish the kernel first: on the real asynchronous
// stream it may still be reading (the seeds' RoPE-table bug). The same declarations feed the
// bytes-read/written statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

// Hot row functions are built for AVX-512, AVX2 and the portable baseline, and the loader picks the widest
// the CPU has (GCC/Clang function multiversioning): their integer block dots are exact and their float
// sums keep their order, so every clone computes the same bits — only faster.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DS4_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DS4_VECTOR_CLONES
#endif

namespace ds4 {

// 'ascend' = the AscendC kernels' approximations (ascend_math.h); 'exact' = libm / IEEE behaviour.
enum class MathMode { Ascend, Exact };

// Bugs the simulator can plant inside a kernel's own arithmetic (ascend/faults.ts), each applicable to
// the kernels whose signature lists the matching approx entry.
enum KernelFaultFlag : uint32_t {
  kFaultCoarseExp = 1u << 0,      // exp ≈ (1 + x/16)^16: a hand-written exp with too few squarings ('exp')
  kFaultRoundHalfAway = 1u << 1,  // float → int8 rounds half away from zero, not to even ('round')
  kFaultPairsHalves = 1u << 2,    // RoPE rotates (x_j, x_{j+n_rot/2}), not adjacent pairs ('rope')
};

enum class Role { In, Weight, Out, InOut };
enum class DType { F32, F16, I8, I32, U8, Q8_0, Q2_K, IQ2_XXS };

// An integer expression over the kernel's scalars, parsed once at registration (shunting-yard → RPN).
class Expr {
 public:
  Expr() = default;
  Expr(const std::string &text, const std::vector<std::string> &scalars);  // throws std::invalid_argument
  int64_t eval(const std::vector<double> &scalars) const;
  const std::string &text() const { return text_; }
  bool empty() const { return text_.empty(); }

 private:
  struct Tok { char op; int64_t value; int scalar; };  // op 0: value or scalar (scalar ≥ 0)
  std::string text_;
  std::vector<Tok> rpn_;
};

struct BufSig {
  std::string name;
  Role role = Role::In;
  DType dtype = DType::F32;
  Expr count, offset, ring;  // elements; offset/ring empty = 0 / no wrap
  Expr mat_n, mat_off, mat_stride;  // square matrices in the span (mat_n empty = none)
  std::string quant;                // "q8_0" | "q8_k" | ""
  bool experts = false;
};

struct Budget { double ascend = 0, exact = 0, per_pos = 0; };

struct KernelSig;
class KernelCall;
using KernelFn = void (*)(const KernelCall &);

struct KernelSig {
  std::string name;  // launch name, e.g. "matmul_f16" (the AscendC kernel is ds4_<name>)
  KernelFn fn = nullptr;
  std::string doc;
  std::vector<std::string> scalars;
  std::vector<BufSig> bufs;
  std::vector<std::string> stages, approx;
  Budget budget;
  std::string scalars_text, bufs_text;
  // The first malformed part of the declaration, if any: the addon refuses to load and names it (the
  // builder runs in static initializers, where an exception would abort the process).
  std::string error;

  // Builder used by DS4_KERNEL.
  KernelSig &describe(const char *text);
  KernelSig &takes(const char *scalar_names);
  KernelSig &buffers(const char *decl);
  KernelSig &produces(const char *stage_names);
  KernelSig &uses(const char *approx_names);
  KernelSig &max_nmse(double ascend, double exact);
  KernelSig &grows_per_pos(double rel);

  int scalar_index(const char *name) const;  // -1 if absent
  int buf_index(const char *name) const;
};

// Bytes per element-block and elements per block of a dtype (f32: 4/1, q8_0: 34/32, ...).
struct DTypeInfo { const char *name; size_t block_bytes; size_t block_elems; };
const DTypeInfo &dtype_info(DType t);
const char *role_name(Role r);

// One buffer's span for a launch's scalars, in bytes.
struct Span {
  size_t off = 0, len = 0, ring = 0;  // ring 0 = no wrap
  // true if [a, a+n) lies within the span
  bool contains(size_t a, size_t n) const;
};
// Evaluates every buffer's span (throws std::invalid_argument naming the buffer if an expression is
// negative or not a whole number of blocks).
std::vector<Span> evaluate_spans(const KernelSig &sig, const std::vector<double> &scalars);

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
  const KernelSig *sig = nullptr;
  const char *kernel = "";  // registered name, for messages
  std::vector<BufferArg> bufs;
  std::vector<double> scalars;
  std::vector<Span> spans;  // evaluated from sig for these scalars
  MathMode mode = MathMode::Ascend;
  uint32_t faults = 0;  // KernelFaultFlag bits
  int parts = 32;
  static constexpr int64_t kSerialPartsBelow = 4096;
  // Filled by the checks: bytes the kernel declared to read / write (stats).
  mutable uint64_t bytes_in = 0, bytes_out = 0;
  // Runs body(p) for p in [0, parts); the device may run parts on several host threads, which is
  // safe because parts own disjoint output indices. Set by the device.
  std::function<void(int, const std::function<void(int)> &)> run_parts_impl;
  void *device_ctx = nullptr;  // the device's live buffer table, consulted by every range check

  // Scalar `name` as integer / float / double.
  int64_t i(const char *name) const { return static_cast<int64_t>(scalar(name)); }
  float f(const char *name) const { return static_cast<float>(scalar(name)); }
  double d(const char *name) const { return scalar(name); }
  bool flag(const char *name) const { return scalar(name) != 0.0; }

  // Buffer `name`: its whole declared span, as T (pointer to the span's first element).
  template <class T>
  const T *in(const char *name) const {
    return reinterpret_cast<const T *>(view(name, Access::Read));
  }
  template <class T>
  T *out(const char *name) const {
    return reinterpret_cast<T *>(view(name, Access::Write));
  }
  // Elements [first, first + count) of buffer `name` (absolute, in units of T; within its span).
  template <class T>
  const T *in(const char *name, size_t first, size_t count) const {
    return reinterpret_cast<const T *>(check(name, first * sizeof(T), count * sizeof(T), Access::Read));
  }
  template <class T>
  T *out(const char *name, size_t first, size_t count) const {
    return reinterpret_cast<T *>(check(name, first * sizeof(T), count * sizeof(T), Access::Write));
  }
  // Byte size of buffer `name`'s allocation, and its device handle (to tell aliased arguments apart).
  size_t bytes(const char *name) const;
  uint32_t handle(const char *name) const;

  bool exact() const { return mode == MathMode::Exact; }
  bool fault(KernelFaultFlag f) const { return (faults & f) != 0; }

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

  // As for_each_index, with up to G of a part's indices at a time: body(idx, n) gets idx[j] = i + j·parts,
  // j < n. The same ownership and the same order within each output: a kernel interleaves their
  // independent reductions to keep the float adder busy instead of waiting on one dependency chain.
  template <int G, class F>
  void for_each_index_group(int64_t total, F &&body) const {
    const int np = parts < 1 ? 1 : parts;
    auto part = [&](int p) {
      int64_t idx[G];
      for (int64_t i = p; i < total; i += (int64_t)G * np) {
        int n = 0;
        for (; n < G && i + n * np < total; n++) idx[n] = i + n * np;
        body(idx, n);
      }
    };
    if (total < kSerialPartsBelow) for (int p = 0; p < np; p++) part(p);
    else run_parts(part);
  }

  // Throws KernelFault("kernel '<kernel>': <msg>").
  [[noreturn]] void fail(const std::string &msg) const;

 private:
  // in()/out() on a whole span: Read for in/weight, Write for out, ReadWrite for inout written in place.
  uint8_t *view(const char *name, Access want) const;
  uint8_t *check(const char *name, size_t byte_off, size_t nbytes, Access want) const;
  int arg(const char *name) const;
  double scalar(const char *name) const;
};

// The global table, filled by static registrars before the addon's init runs (a deque: entries keep
// their address while later ones are added).
std::deque<KernelSig> &kernel_registry();
KernelSig &register_kernel(const char *name, KernelFn fn);

}  // namespace ds4

// DS4_KERNEL("matmul_f16", matmul_f16)
//     .describe("y = W·x")
//     .takes("in_dim, out_dim, n_tok")
//     .buffers("out y f32[n_tok*out_dim]; weight w f16[out_dim*in_dim]; in x f32[n_tok*in_dim]")
//     .produces("hc_attn_mix")
//     .max_nmse(ascend, exact);
#define DS4_KERNEL(name, fn) \
  static const ::ds4::KernelSig &ds4_kernel_sig_##fn = ::ds4::register_kernel(name, fn)
