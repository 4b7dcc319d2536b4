// The simulated Ascend device (see device.h) and the device side of KernelCall.
#include "device.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace ds4 {

// Fresh allocations read as f32 NaN (0xffffffff), like uninitialised device memory that happens to
// be garbage: a kernel reading what nobody wrote shows up as NaN in the diff. Freed memory is
// overwritten with 0xfd bytes (f32 ≈ −4.2e37) so stale reads are loud too.
static const uint8_t kFreshByte = 0xff;
static const uint8_t kPoisonByte = 0xfd;
// Freed buffers stay quarantined (memory kept, handle never reused) up to this many bytes.
static const size_t kQuarantineBytes = size_t(256) << 20;

// ---------------------------------------------------------------- KernelCall (device side)

int KernelCall::arg(const char *name) const {
  const int k = sig->buf_index(name);
  if (k < 0) fail(std::string("has no buffer named ") + name + " (signature: " + sig->bufs_text + ")");
  return k;
}

double KernelCall::scalar(const char *name) const {
  const int k = sig->scalar_index(name);
  if (k < 0) fail(std::string("has no scalar named ") + name + " (signature: " + sig->scalars_text + ")");
  return scalars[k];
}

size_t KernelCall::bytes(const char *name) const { return bufs[arg(name)].bytes; }
uint32_t KernelCall::handle(const char *name) const { return bufs[arg(name)].id; }

// The access a role allows: in/weight read, out write, inout read and write.
static bool role_allows(Role r, Access want) {
  if (want == Access::Read) return r != Role::Out;
  return r == Role::Out || r == Role::InOut;
}

uint8_t *KernelCall::view(const char *name, Access want) const {
  const int k = arg(name);
  const Span &s = spans[k];
  // an inout buffer written through out() is read and written in place
  const Access a = want == Access::Write && sig->bufs[k].role == Role::InOut ? Access::ReadWrite : want;
  return check(name, s.ring ? 0 : s.off, s.ring ? s.ring : s.len, a);
}

uint8_t *KernelCall::check(const char *name, size_t byte_off, size_t nbytes, Access want) const {
  const int k = arg(name);
  const BufSig &b = sig->bufs[k];
  if (!role_allows(b.role, want))
    fail(std::string(want == Access::Read ? "reads" : "writes") + " buffer " + name + " declared " + role_name(b.role));
  const Access a = want == Access::Write && b.role == Role::InOut ? Access::ReadWrite : want;
  const Span &s = spans[k];
  const bool whole_ring = s.ring && byte_off == 0 && nbytes == s.ring && a != Access::Write;
  if (!whole_ring && !s.contains(byte_off, nbytes))
    fail("touches bytes " + std::to_string(byte_off) + "..+" + std::to_string(nbytes) + " of buffer " + name +
         ", outside its declared span [" + b.offset.text() + ", +" + b.count.text() + ") = bytes " + std::to_string(s.off) +
         "..+" + std::to_string(s.len));
  return static_cast<Device *>(device_ctx)->check_access(*this, k, byte_off, nbytes, a);
}

void KernelCall::run_parts(const std::function<void(int)> &body) const {
  const int np = parts < 1 ? 1 : parts;
  if (run_parts_impl) run_parts_impl(np, body);
  else for (int p = 0; p < np; p++) body(p);
}

void KernelCall::fail(const std::string &msg) const { throw KernelFault(std::string("kernel '") + kernel + "': " + msg); }

// ---------------------------------------------------------------- PartsPool

PartsPool::PartsPool(int threads) {
  for (int t = 1; t < threads; t++) helpers_.emplace_back([this] { helper_loop(); });
}

PartsPool::~PartsPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto &t : helpers_) t.join();
}

static void run_claimed(std::atomic<int> &next, int parts, const std::function<void(int)> &body) {
  for (int p = next.fetch_add(1); p < parts; p = next.fetch_add(1)) body(p);
}

void PartsPool::helper_loop() {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)> *body;
    int parts;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (!body_) continue;  // woke after that launch's parts were all done
      body = body_;
      parts = parts_;
      active_++;
    }
    std::exception_ptr err;
    try {
      run_claimed(next_, parts, *body);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (err && !error_) error_ = err;
    if (--active_ == 0) done_cv_.notify_all();
  }
}

void PartsPool::run(int parts, const std::function<void(int)> &body) {
  if (helpers_.empty() || parts <= 1) {
    for (int p = 0; p < parts; p++) body(p);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    body_ = &body;
    parts_ = parts;
    next_ = 0;
    error_ = nullptr;
    generation_++;
  }
  cv_.notify_all();
  std::exception_ptr err;
  try {
    run_claimed(next_, parts, body);
  } catch (...) {
    err = std::current_exception();
  }
  std::unique_lock<std::mutex> lk(mu_);
  // Helpers that woke late find next_ ≥ parts and return at once; wait for all that joined.
  done_cv_.wait(lk, [&] { return active_ == 0; });
  body_ = nullptr;
  if (!err) err = error_;
  lk.unlock();
  if (err) std::rethrow_exception(err);
}

// ---------------------------------------------------------------- Device

static int env_threads() {
  const char *s = std::getenv("DS4_SIM_THREADS");
  int n = s && *s ? std::atoi(s) : (int)std::thread::hardware_concurrency();
  if (n < 1) n = 1;
  if (n > 16) n = 16;
  return n;
}

Device::Device() {
  const char *p = std::getenv("DS4_ASCEND_KERNEL_PARTS");
  if (p && *p) {
    const int n = std::atoi(p);
    if (n >= 1 && n <= 64) parts = n;  // ds4-ascend's limits (catalog §10)
  }
  for (const KernelSig &k : kernel_registry()) kernels_[k.name] = &k;
  pool_ = std::make_unique<PartsPool>(env_threads());
  worker_ = std::thread([this] { worker_loop(); });
}

Device::~Device() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  worker_.join();
}

Device::Buffer &Device::live(uint32_t h, const char *what) {
  auto it = buffers_.find(h);
  if (it == buffers_.end()) throw std::runtime_error(std::string(what) + ": no device buffer #" + std::to_string(h));
  if (it->second.freed)
    throw std::runtime_error(std::string(what) + ": device buffer #" + std::to_string(h) + " '" + it->second.tag +
                             "' was freed");
  return it->second;
}

uint32_t Device::alloc(size_t bytes, const std::string &tag) {
  if (bytes == 0) throw std::runtime_error("alloc '" + tag + "': size must be > 0");
  std::unique_ptr<uint8_t[]> mem(new (std::nothrow) uint8_t[bytes]);
  if (!mem) throw std::runtime_error("alloc '" + tag + "': out of device memory (" + std::to_string(bytes) + " bytes)");
  std::memset(mem.get(), kFreshByte, bytes);
  Buffer b;
  b.tag = tag;
  b.mem = std::move(mem);
  b.bytes = bytes;
  return add_buffer(std::move(b));
}

uint32_t Device::map_weight(std::shared_ptr<FileMapping> file, size_t offset, size_t bytes, const std::string &tag) {
  if (bytes == 0) throw std::runtime_error("map '" + tag + "': size must be > 0");
  if (!file || offset > file->size || bytes > file->size - offset)
    throw std::runtime_error("map '" + tag + "': " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                             " are outside the mapped model file");
  Buffer b;
  b.tag = tag;
  b.file = std::move(file);
  b.file_off = offset;
  b.bytes = bytes;
  return add_buffer(std::move(b));
}

// A new buffer (fresh device memory or a mapped weight) under the next handle.
uint32_t Device::add_buffer(Buffer b) {
  std::lock_guard<std::mutex> lk(mu_);
  const uint32_t h = next_handle_++;
  buffers_.emplace(h, std::move(b));
  return h;
}

// A mapped weight is the model file itself (read-only): it is dropped, not poisoned.
void Device::poison(Buffer &b) {
  if (b.mem) std::memset(b.mem.get(), kPoisonByte, b.bytes);
}

void Device::note_access(Buffer &b, uint64_t seq, const std::string &who, size_t off, size_t n, Access access) {
  if (n == 0 || b.access_seq == seq) return;  // keep the first real access of each stream op
  b.access_seq = seq;
  b.access_who = who;
  b.access_off = off;
  b.access_n = n;
  b.access = access;
}

bool Device::running_uses(uint32_t h) const {
  if (!running_) return false;
  for (const BufferArg &a : running_->bufs)
    if (a.id == h) return true;
  return false;
}

void Device::evict_quarantine() {
  while (quarantine_bytes_ > kQuarantineBytes && !quarantine_.empty()) {
    const uint32_t h = quarantine_.front();
    if (running_uses(h)) break;  // the running kernel still holds its address
    quarantine_.pop_front();
    Buffer &b = buffers_[h];
    quarantine_bytes_ -= b.held();
    b.mem.reset();
    b.file.reset();
  }
}

void Device::free(uint32_t h) {
  std::lock_guard<std::mutex> lk(mu_);
  Buffer &b = live(h, "free");
  b.freed = true;
  // A launch executing right now that already declared a range of this buffer is reading or writing
  // memory that is being freed under it: that is the use-after-free (queued launches that reach the
  // buffer later are caught by their own range checks).
  const bool in_running = running_uses(h);
  if (in_running) {
    for (const DeclaredRange &a : running_accesses_) {
      if (a.id != h || !fault_.empty()) continue;
      fault_ = std::string("device sanitizer: kernel '") + running_->kernel + "' " +
               (a.access == Access::Read ? "read" : "wrote") + " freed buffer #" + std::to_string(h) + " '" + b.tag +
               "' (" + std::to_string(b.bytes) + " bytes) at offset " + std::to_string(a.off) + " (+" +
               std::to_string(a.n) + " bytes): it was freed while the kernel was running";
    }
  }
  if (!in_running && fault_.empty() && b.last_seq > host_synced_seq_ && b.access_seq == b.last_seq &&
      b.last_seq <= completed_seq_) {
    // The launch already ran, but the host freed the buffer without synchronizing with it: on the real
    // device (asynchronous stream) the kernel may still be reading it.
    fault_ = "device sanitizer: " + b.access_who + " " + (b.access == Access::Read ? "read" : "wrote") +
             " freed buffer #" + std::to_string(h) + " '" + b.tag + "' (" + std::to_string(b.bytes) +
             " bytes) at offset " + std::to_string(b.access_off) + " (+" + std::to_string(b.access_n) +
             " bytes): it was freed before the stream was synchronized with it";
  }
  if (in_running) poison_after_running_.push_back(h);
  else poison(b);
  quarantine_.push_back(h);
  quarantine_bytes_ += b.held();
  evict_quarantine();
}

size_t Device::size_of(uint32_t h) {
  std::lock_guard<std::mutex> lk(mu_);
  return live(h, "size").bytes;
}

void Device::upload(uint32_t h, const uint8_t *data, size_t n, size_t offset) {
  Op op;
  op.kind = Op::Upload;
  {
    std::lock_guard<std::mutex> lk(mu_);
    Buffer &b = live(h, "upload");
    if (offset > b.bytes || n > b.bytes - offset)
      throw std::runtime_error("upload: " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                               " do not fit device buffer #" + std::to_string(h) + " '" + b.tag + "' (" +
                               std::to_string(b.bytes) + " bytes)");
    if (b.file) throw std::runtime_error("upload: device buffer #" + std::to_string(h) + " '" + b.tag + "' is a weight mapped read-only from the model file");
    // An idle stream has nothing the copy could overtake: copy now, without staging the bytes (weights
    // are uploaded this way, once, before any launch).
    if (queue_.empty() && !busy_) {
      std::memcpy(b.mem.get() + offset, data, n);
      return;
    }
  }
  op.bufs = {h};
  op.data.assign(data, data + n);
  op.offset = offset;
  std::lock_guard<std::mutex> lk(mu_);
  op.seq = ++launch_seq_;
  buffers_.at(h).last_seq = op.seq;
  queue_.push_back(std::move(op));
  queue_cv_.notify_one();
}

std::vector<uint8_t> Device::download(uint32_t h, size_t n, size_t offset) {
  synchronize();
  std::lock_guard<std::mutex> lk(mu_);
  Buffer &b = live(h, "download");
  if (n == SIZE_MAX) n = offset <= b.bytes ? b.bytes - offset : 0;
  if (offset > b.bytes || n > b.bytes - offset)
    throw std::runtime_error("download: " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                             " exceed device buffer #" + std::to_string(h) + " '" + b.tag + "' (" +
                             std::to_string(b.bytes) + " bytes)");
  return std::vector<uint8_t>(b.data() + offset, b.data() + offset + n);
}

void Device::launch(const std::string &kernel, const std::vector<uint32_t> &bufs, const std::vector<double> &scalars,
                    MathMode mode, int nparts, uint32_t faults) {
  auto k = kernels_.find(kernel);
  if (k == kernels_.end()) throw std::runtime_error("launch: no device kernel '" + kernel + "'");
  const KernelSig &sig = *k->second;
  if (bufs.size() != sig.bufs.size() || scalars.size() != sig.scalars.size())
    throw std::runtime_error("launch '" + kernel + "': takes " + std::to_string(sig.bufs.size()) + " buffers (" + sig.bufs_text +
                             ") and " + std::to_string(sig.scalars.size()) + " scalars (" + sig.scalars_text + "), got " +
                             std::to_string(bufs.size()) + " and " + std::to_string(scalars.size()));
  Op op;
  op.kind = Op::Launch;
  op.kernel = &sig;
  op.bufs = bufs;
  op.scalars = scalars;
  try {
    op.spans = evaluate_spans(sig, scalars);
  } catch (const std::invalid_argument &e) {
    throw std::runtime_error(std::string("launch '") + kernel + "': " + e.what());
  }
  op.mode = mode;
  op.faults = faults;
  op.parts = nparts;
  std::lock_guard<std::mutex> lk(mu_);
  op.seq = ++launch_seq_;
  for (uint32_t h : bufs) {
    auto it = buffers_.find(h);
    if (it != buffers_.end()) it->second.last_seq = op.seq;
  }
  // Handles must exist; a handle freed before the launch is let through so the kernel's own range
  // check reports it with the offset it touches (the sanitizer's use-after-free).
  for (uint32_t h : bufs)
    if (!buffers_.count(h)) throw std::runtime_error("launch '" + kernel + "': no device buffer #" + std::to_string(h));
  queue_.push_back(std::move(op));
  queue_cv_.notify_one();
}

void Device::throw_fault_locked() {
  std::string msg;
  msg.swap(fault_);
  throw std::runtime_error(msg);
}

void Device::synchronize() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
  host_synced_seq_ = launch_seq_;
  if (!fault_.empty()) throw_fault_locked();
}

uint32_t Device::record_event() {
  std::lock_guard<std::mutex> lk(mu_);
  Op op;
  op.kind = Op::Event;
  op.event = next_event_++;
  op.seq = launch_seq_;
  events_[op.event] = false;
  event_seq_[op.event] = op.seq;
  const uint32_t e = op.event;
  queue_.push_back(std::move(op));
  queue_cv_.notify_one();
  return e;
}

void Device::wait_event(uint32_t e) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!events_.count(e)) throw std::runtime_error("waitEvent: no event #" + std::to_string(e));
  idle_cv_.wait(lk, [&] { return events_[e]; });
  host_synced_seq_ = std::max(host_synced_seq_, event_seq_[e]);
}

bool Device::query_event(uint32_t e) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = events_.find(e);
  if (it == events_.end()) throw std::runtime_error("queryEvent: no event #" + std::to_string(e));
  if (it->second) host_synced_seq_ = std::max(host_synced_seq_, event_seq_[e]);
  return it->second;
}

std::map<std::string, KernelStats> Device::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void Device::reset_stats() {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.clear();
}

void Device::run_parts(int np, const std::function<void(int)> &body) { pool_->run(np, body); }

uint8_t *Device::check_access(const KernelCall &call, int arg, size_t off, size_t n, Access access) {
  std::lock_guard<std::mutex> lk(mu_);
  const BufferArg &a = call.bufs[arg];
  const Buffer &b = buffers_.at(a.id);
  const char *verb = access == Access::Read ? "read" : "wrote";
  if (b.freed || !b.data())
    throw KernelFault(std::string("device sanitizer: kernel '") + call.kernel + "' " + verb + " freed buffer #" +
                      std::to_string(a.id) + " '" + b.tag + "' (" + std::to_string(b.bytes) + " bytes) at offset " +
                      std::to_string(off) + " (+" + std::to_string(n) + " bytes)");
  if (off > b.bytes || n > b.bytes - off)
    throw KernelFault(std::string("device sanitizer: kernel '") + call.kernel + "' " + verb +
                      " out of bounds of buffer #" + std::to_string(a.id) + " '" + b.tag + "' (" +
                      std::to_string(b.bytes) + " bytes) at offset " + std::to_string(off) + " (+" +
                      std::to_string(n) + " bytes)");
  running_accesses_.push_back(DeclaredRange{a.id, off, n, access});
  note_access(buffers_.at(a.id), running_seq_, std::string("kernel '") + call.kernel + "'", off, n, access);
  if (access != Access::Write) call.bytes_in += n;
  if (access != Access::Read) call.bytes_out += n;
  if (b.file && access != Access::Read)
    throw KernelFault(std::string("device sanitizer: kernel '") + call.kernel + "' wrote buffer #" + std::to_string(a.id) + " '" + b.tag +
                      "', a weight mapped read-only from the model file");
  return b.data() + off;
}

void Device::execute(Op &op) {
  if (op.kind == Op::Event) {
    std::lock_guard<std::mutex> lk(mu_);
    events_[op.event] = true;
    return;
  }
  if (op.kind == Op::Upload) {
    std::lock_guard<std::mutex> lk(mu_);
    Buffer &b = buffers_.at(op.bufs[0]);
    if (b.freed) {
      completed_seq_ = op.seq;
      if (fault_.empty())
        fault_ = "device sanitizer: upload wrote freed buffer #" + std::to_string(op.bufs[0]) + " '" + b.tag +
                 "' at offset " + std::to_string(op.offset);
      return;
    }
    std::memcpy(b.mem.get() + op.offset, op.data.data(), op.data.size());
    note_access(b, op.seq, "upload", op.offset, op.data.size(), Access::Write);
    completed_seq_ = op.seq;
    return;
  }
  KernelCall call;
  call.sig = op.kernel;
  call.kernel = op.kernel->name.c_str();
  call.scalars = op.scalars;
  call.spans = op.spans;
  call.mode = op.mode;
  call.faults = op.faults;
  call.parts = op.parts;
  call.device_ctx = this;
  call.run_parts_impl = [this](int np, const std::function<void(int)> &body) { run_parts(np, body); };
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!fault_.empty()) {  // a faulted stream runs nothing until synchronize reports it
      completed_seq_ = op.seq;
      return;
    }
    for (uint32_t h : op.bufs) {
      const Buffer &b = buffers_.at(h);
      call.bufs.push_back(BufferArg{h, b.tag, b.data(), b.bytes});
    }
    running_ = &call;
    running_seq_ = op.seq;
    running_accesses_.clear();
  }
  std::string err;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    op.kernel->fn(call);
  } catch (const std::exception &e) {
    err = e.what();
  }
  const auto t1 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lk(mu_);
  running_ = nullptr;
  completed_seq_ = op.seq;
  running_accesses_.clear();
  for (uint32_t h : poison_after_running_) poison(buffers_.at(h));
  poison_after_running_.clear();
  evict_quarantine();
  if (!err.empty() && fault_.empty()) fault_ = err;
  KernelStats &s = stats_[op.kernel->name];
  s.calls++;
  s.bytes_in += call.bytes_in;
  s.bytes_out += call.bytes_out;
  s.ns += (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}

void Device::worker_loop() {
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lk(mu_);
      queue_cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and drained
      op = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    execute(op);
    {
      std::lock_guard<std::mutex> lk(mu_);
      busy_ = false;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace ds4
