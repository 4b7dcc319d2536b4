// N-API binding of the simulated device: `new addon.Device()` exposes the methods documented in
// ascend/native.ts. Handles are plain numbers; the host never receives a device address.
#include <napi.h>

#include "device.h"
#include "mapping.h"
#include "bandwidth.h"

namespace {

using ds4::Device;
using ds4::MathMode;

MathMode parse_math(const Napi::Env &env, const std::string &m) {
  if (m == "ascend") return MathMode::Ascend;
  if (m == "exact") return MathMode::Exact;
  throw Napi::Error::New(env, "math mode must be 'ascend' or 'exact', got '" + m + "'");
}

int parse_parts(const Napi::Env &env, const Napi::Value &v) {
  const int64_t n = v.As<Napi::Number>().Int64Value();
  if (n < 1 || n > 64) throw Napi::Error::New(env, "parts must be 1..64 (DS4_ASCEND_KERNEL_PARTS), got " + std::to_string(n));
  return (int)n;
}

uint32_t handle_arg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a device buffer handle");
  return info[i].As<Napi::Number>().Uint32Value();
}

size_t size_arg(const Napi::CallbackInfo &info, size_t i, size_t dflt) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return dflt;
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != (double)(size_t)d) throw Napi::RangeError::New(info.Env(), "expected a non-negative integer");
  return (size_t)d;
}

// Runs a device call, turning C++ errors into JS exceptions with the same text.
template <class F>
auto guarded(const Napi::Env &env, F &&f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error &) {
    throw;
  } catch (const std::exception &e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Array strings(const Napi::Env &env, const std::vector<std::string> &v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set((uint32_t)i, v[i]);
  return a;
}

// The registered kernels with their signatures (kernels/kernel_api.h), as ascend/native.ts KernelSignature.
Napi::Value kernel_table(const Napi::Env &env) {
  const auto &reg = ds4::kernel_registry();
  Napi::Array out = Napi::Array::New(env, reg.size());
  uint32_t i = 0;
  for (const ds4::KernelSig &k : reg) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", k.name);
    o.Set("doc", k.doc);
    o.Set("scalars", strings(env, k.scalars));
    Napi::Array bufs = Napi::Array::New(env, k.bufs.size());
    for (size_t b = 0; b < k.bufs.size(); b++) {
      const ds4::BufSig &s = k.bufs[b];
      Napi::Object bo = Napi::Object::New(env);
      bo.Set("name", s.name);
      bo.Set("role", ds4::role_name(s.role));
      bo.Set("dtype", ds4::dtype_info(s.dtype).name);
      bo.Set("count", s.count.text());
      bo.Set("offset", s.offset.empty() ? "0" : s.offset.text());
      if (!s.ring.empty()) bo.Set("ring", s.ring.text());
      if (!s.mat_n.empty()) bo.Set("mat", strings(env, {s.mat_n.text(), s.mat_off.text(), s.mat_stride.text()}));
      if (!s.quant.empty()) bo.Set("quant", s.quant);
      if (s.experts) bo.Set("experts", true);
      bufs.Set((uint32_t)b, bo);
    }
    o.Set("buffers", bufs);
    o.Set("stages", strings(env, k.stages));
    o.Set("approx", strings(env, k.approx));
    Napi::Object budget = Napi::Object::New(env);
    budget.Set("ascend", k.budget.ascend);
    budget.Set("exact", k.budget.exact);
    if (k.budget.per_pos > 0) budget.Set("perPos", k.budget.per_pos);
    o.Set("budget", budget);
    out.Set(i++, o);
  }
  return out;
}

const ds4::KernelSig &find_kernel(const Napi::Env &env, const std::string &name) {
  for (const ds4::KernelSig &k : ds4::kernel_registry())
    if (k.name == name) return k;
  throw Napi::Error::New(env, "no device kernel '" + name + "'");
}

std::vector<double> number_list(const Napi::Env &env, const Napi::Value &v, const char *what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": expected an array of numbers");
  auto a = v.As<Napi::Array>();
  std::vector<double> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::Number>().DoubleValue());
  return out;
}

// spans(kernel, scalars[]): every buffer's span for these scalars, in bytes (square matrices in elements).
Napi::Value Spans(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString()) throw Napi::TypeError::New(env, "spans(kernel, scalars[])");
  const ds4::KernelSig &k = find_kernel(env, info[0].As<Napi::String>().Utf8Value());
  const std::vector<double> scalars = number_list(env, info[1], "spans");
  if (scalars.size() != k.scalars.size())
    throw Napi::Error::New(env, "spans '" + k.name + "': takes " + std::to_string(k.scalars.size()) + " scalars (" + k.scalars_text + ")");
  const std::vector<ds4::Span> spans = guarded(env, [&] {
    try {
      return ds4::evaluate_spans(k, scalars);
    } catch (const std::invalid_argument &e) {
      throw std::runtime_error(e.what());
    }
  });
  Napi::Array out = Napi::Array::New(env, spans.size());
  for (size_t b = 0; b < spans.size(); b++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("offset", (double)spans[b].off);
    o.Set("bytes", (double)spans[b].len);
    o.Set("ring", (double)spans[b].ring);
    const ds4::BufSig &s = k.bufs[b];
    if (!s.mat_n.empty()) {
      Napi::Array m = Napi::Array::New(env, 3);
      m.Set(0u, (double)s.mat_n.eval(scalars));
      m.Set(1u, (double)s.mat_off.eval(scalars));
      m.Set(2u, (double)s.mat_stride.eval(scalars));
      o.Set("mat", m);
    }
    out.Set((uint32_t)b, o);
  }
  return out;
}

// Names of the faults a launch may plant in the kernel's own arithmetic (kernel_api.h KernelFaultFlag).
uint32_t fault_flags(const Napi::Env &env, const Napi::Value &v) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, "launch: opts.faults must be an array of fault names");
  auto a = v.As<Napi::Array>();
  uint32_t f = 0;
  for (uint32_t i = 0; i < a.Length(); i++) {
    const std::string n = a.Get(i).As<Napi::String>().Utf8Value();
    if (n == "coarse-exp") f |= ds4::kFaultCoarseExp;
    else if (n == "round-half-away") f |= ds4::kFaultRoundHalfAway;
    else if (n == "pairs-halves") f |= ds4::kFaultPairsHalves;
    else throw Napi::Error::New(env, "launch: no in-kernel fault '" + n + "' (coarse-exp, round-half-away, pairs-halves)");
  }
  return f;
}

// The file mapping registered as info[i] (mapFile's id); an unmapped id is an error.
std::shared_ptr<ds4::FileMapping> mapping_arg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "expected a file mapping id");
  auto m = ds4::mapping(info[i].As<Napi::Number>().Uint32Value());
  if (!m) throw Napi::Error::New(info.Env(), "file mapping #" + std::to_string(info[i].As<Napi::Number>().Uint32Value()) + " was unmapped");
  return m;
}

// mapFile(fd) → id: maps the open file read-only (see mapping.h).
Napi::Value MapFile(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "mapFile(fd)");
  const int fd = info[0].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(), guarded(info.Env(), [&] { return ds4::map_file(fd); }));
}

// unmapFile(id): drops the registration; views and device buffers still holding the mapping keep it.
Napi::Value UnmapFile(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "unmapFile(id)");
  ds4::unmap_file(info[0].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

// mapRange(id, offset, length) → an ArrayBuffer over those bytes of the mapping (no copy; read-only
// memory: the reference only reads weights). The buffer holds the mapping until it is collected.
Napi::Value MapRange(const Napi::CallbackInfo &info) {
  auto m = mapping_arg(info, 0);
  const size_t offset = size_arg(info, 1, 0), length = size_arg(info, 2, 0);
  if (offset > m->size || length > m->size - offset)
    throw Napi::RangeError::New(info.Env(), "mapRange: " + std::to_string(length) + " bytes at " + std::to_string(offset) +
                                                " are outside the mapped file (" + std::to_string(m->size) + " bytes)");
  auto *hold = new std::shared_ptr<ds4::FileMapping>(m);
  return Napi::ArrayBuffer::New(
      info.Env(), const_cast<uint8_t *>(m->base) + offset, length,
      [](Napi::Env, void *, std::shared_ptr<ds4::FileMapping> *h) { delete h; }, hold);
}

// readBandwidth(bytes, threads, reps) → bytes/s read from memory (bandwidth.h read_bandwidth).
Napi::Value ReadBandwidth(const Napi::CallbackInfo &info) {
  const size_t bytes = size_arg(info, 0, size_t(256) << 20);
  const int threads = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 1;
  const int reps = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 3;
  return Napi::Number::New(info.Env(), ds4::read_bandwidth(bytes, threads, reps < 1 ? 1 : reps));
}

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Device",
                       {
                           InstanceMethod("alloc", &DeviceWrap::Alloc),
                           InstanceMethod("mapWeight", &DeviceWrap::MapWeight),
                           InstanceMethod("free", &DeviceWrap::Free),
                           InstanceMethod("size", &DeviceWrap::Size),
                           InstanceMethod("upload", &DeviceWrap::Upload),
                           InstanceMethod("download", &DeviceWrap::Download),
                           InstanceMethod("launch", &DeviceWrap::Launch),
                           InstanceMethod("synchronize", &DeviceWrap::Synchronize),
                           InstanceMethod("recordEvent", &DeviceWrap::RecordEvent),
                           InstanceMethod("waitEvent", &DeviceWrap::WaitEvent),
                           InstanceMethod("queryEvent", &DeviceWrap::QueryEvent),
                           InstanceMethod("setMathMode", &DeviceWrap::SetMathMode),
                           InstanceMethod("mathMode", &DeviceWrap::GetMathMode),
                           InstanceMethod("setParts", &DeviceWrap::SetParts),
                           InstanceMethod("parts", &DeviceWrap::GetParts),
                           InstanceMethod("stats", &DeviceWrap::Stats),
                           InstanceMethod("resetStats", &DeviceWrap::ResetStats),
                           InstanceMethod("kernels", &DeviceWrap::Kernels),
                       });
  }

  explicit DeviceWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<DeviceWrap>(info) {}

 private:
  Device dev_;

  Napi::Value Alloc(const Napi::CallbackInfo &info) {
    const size_t bytes = size_arg(info, 0, 0);
    const std::string tag = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    return Napi::Number::New(info.Env(), guarded(info.Env(), [&] { return dev_.alloc(bytes, tag); }));
  }
  Napi::Value MapWeight(const Napi::CallbackInfo &info) {
    auto file = mapping_arg(info, 0);
    const size_t offset = size_arg(info, 1, 0), bytes = size_arg(info, 2, 0);
    const std::string tag = info.Length() > 3 && info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
    return Napi::Number::New(info.Env(), guarded(info.Env(), [&] { return dev_.map_weight(file, offset, bytes, tag); }));
  }
  Napi::Value Free(const Napi::CallbackInfo &info) {
    const uint32_t h = handle_arg(info, 0, "free");
    guarded(info.Env(), [&] { dev_.free(h); });
    return info.Env().Undefined();
  }
  Napi::Value Size(const Napi::CallbackInfo &info) {
    const uint32_t h = handle_arg(info, 0, "size");
    return Napi::Number::New(info.Env(), (double)guarded(info.Env(), [&] { return dev_.size_of(h); }));
  }
  Napi::Value Upload(const Napi::CallbackInfo &info) {
    const uint32_t h = handle_arg(info, 0, "upload");
    if (info.Length() < 2 || (!info[1].IsTypedArray() && !info[1].IsDataView()))
      throw Napi::TypeError::New(info.Env(), "upload: expected an ArrayBufferView");
    const uint8_t *data;
    size_t n;
    if (info[1].IsDataView()) {
      auto dv = info[1].As<Napi::DataView>();
      data = static_cast<const uint8_t *>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
      n = dv.ByteLength();
    } else {
      auto ta = info[1].As<Napi::TypedArray>();
      data = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      n = ta.ByteLength();
    }
    const size_t offset = size_arg(info, 2, 0);
    guarded(info.Env(), [&] { dev_.upload(h, data, n, offset); });
    return info.Env().Undefined();
  }
  Napi::Value Download(const Napi::CallbackInfo &info) {
    const uint32_t h = handle_arg(info, 0, "download");
    const size_t n = size_arg(info, 1, SIZE_MAX);
    const size_t offset = size_arg(info, 2, 0);
    auto bytes = guarded(info.Env(), [&] { return dev_.download(h, n, offset); });
    return Napi::Buffer<uint8_t>::Copy(info.Env(), bytes.data(), bytes.size());
  }
  Napi::Value Launch(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsArray())
      throw Napi::TypeError::New(env, "launch(kernel, bufs[], scalars[], opts?)");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    std::vector<uint32_t> bufs;
    auto jb = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < jb.Length(); i++) bufs.push_back(jb.Get(i).As<Napi::Number>().Uint32Value());
    const std::vector<double> scalars = number_list(env, info[2], "launch");
    MathMode mode = dev_.math_mode;
    int parts = dev_.parts;
    uint32_t faults = 0;
    if (info.Length() > 3 && info[3].IsObject()) {
      auto o = info[3].As<Napi::Object>();
      if (o.Has("math") && !o.Get("math").IsUndefined()) mode = parse_math(env, o.Get("math").As<Napi::String>().Utf8Value());
      if (o.Has("parts") && !o.Get("parts").IsUndefined()) parts = parse_parts(env, o.Get("parts"));
      if (o.Has("faults") && !o.Get("faults").IsUndefined()) faults = fault_flags(env, o.Get("faults"));
    }
    guarded(env, [&] { dev_.launch(name, bufs, scalars, mode, parts, faults); });
    return env.Undefined();
  }
  Napi::Value Synchronize(const Napi::CallbackInfo &info) {
    guarded(info.Env(), [&] { dev_.synchronize(); });
    return info.Env().Undefined();
  }
  Napi::Value RecordEvent(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), dev_.record_event());
  }
  Napi::Value WaitEvent(const Napi::CallbackInfo &info) {
    const uint32_t e = handle_arg(info, 0, "waitEvent");
    guarded(info.Env(), [&] { dev_.wait_event(e); });
    return info.Env().Undefined();
  }
  Napi::Value QueryEvent(const Napi::CallbackInfo &info) {
    const uint32_t e = handle_arg(info, 0, "queryEvent");
    return Napi::Boolean::New(info.Env(), guarded(info.Env(), [&] { return dev_.query_event(e); }));
  }
  Napi::Value SetMathMode(const Napi::CallbackInfo &info) {
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "setMathMode('ascend'|'exact')");
    dev_.math_mode = parse_math(info.Env(), info[0].As<Napi::String>().Utf8Value());
    return info.Env().Undefined();
  }
  Napi::Value GetMathMode(const Napi::CallbackInfo &info) {
    return Napi::String::New(info.Env(), dev_.math_mode == MathMode::Exact ? "exact" : "ascend");
  }
  Napi::Value SetParts(const Napi::CallbackInfo &info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "setParts(n)");
    dev_.parts = parse_parts(info.Env(), info[0]);
    return info.Env().Undefined();
  }
  Napi::Value GetParts(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), dev_.parts); }
  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    for (auto &kv : dev_.stats()) {
      Napi::Object s = Napi::Object::New(env);
      s.Set("calls", Napi::Number::New(env, (double)kv.second.calls));
      s.Set("bytesIn", Napi::Number::New(env, (double)kv.second.bytes_in));
      s.Set("bytesOut", Napi::Number::New(env, (double)kv.second.bytes_out));
      s.Set("ns", Napi::Number::New(env, (double)kv.second.ns));
      out.Set(kv.first, s);
    }
    return out;
  }
  Napi::Value ResetStats(const Napi::CallbackInfo &info) {
    dev_.reset_stats();
    return info.Env().Undefined();
  }
  Napi::Value Kernels(const Napi::CallbackInfo &info) { return kernel_table(info.Env()); }
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (const ds4::KernelSig &k : ds4::kernel_registry()) {
    if (!k.error.empty()) throw Napi::Error::New(env, "malformed kernel signature: " + k.error);
    if (k.bufs.empty()) throw Napi::Error::New(env, "malformed kernel signature: " + k.name + " declares no buffers");
  }
  exports.Set("Device", DeviceWrap::Init(env));
  exports.Set("kernels", Napi::Function::New(env, [](const Napi::CallbackInfo &info) { return kernel_table(info.Env()); }));
  exports.Set("spans", Napi::Function::New(env, Spans));
  exports.Set("mapFile", Napi::Function::New(env, MapFile));
  exports.Set("unmapFile", Napi::Function::New(env, UnmapFile));
  exports.Set("mapRange", Napi::Function::New(env, MapRange));
  exports.Set("readBandwidth", Napi::Function::New(env, ReadBandwidth));
  return exports;
}

}  // namespace

NODE_API_MODULE(ds4_sim, Init)
