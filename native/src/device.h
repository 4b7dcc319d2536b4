// The simulated Ascend device: device memory the host cannot address, one in-order stream whose
// kernel launches run asynchronously on a worker thread, events, per-kernel statistics and the
// device memory sanitizer (see kernels/kernel_api.h for the kernel side of the contract).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../../kernels/kernel_api.h"
#include "mapping.h"

namespace ds4 {

struct KernelStats {
  uint64_t calls = 0, bytes_in = 0, bytes_out = 0, ns = 0;
};

// Helper threads that run the parts of one kernel concurrently (parts own disjoint outputs).
class PartsPool {
 public:
  explicit PartsPool(int threads);
  ~PartsPool();
  void run(int parts, const std::function<void(int)> &body);

 private:
  void helper_loop();
  std::vector<std::thread> helpers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)> *body_ = nullptr;
  int parts_ = 0;
  std::atomic<int> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

class Device {
 public:
  Device();
  ~Device();

  uint32_t alloc(size_t bytes, const std::string &tag);
  // A weight buffer that is `bytes` bytes of a model file's mapping at `offset`: read-only device memory
  // with nothing filled, copied or uploaded (a write to it, by a kernel or an upload, is a fault).
  uint32_t map_weight(std::shared_ptr<FileMapping> file, size_t offset, size_t bytes, const std::string &tag);
  void free(uint32_t h);
  void upload(uint32_t h, const uint8_t *data, size_t n, size_t offset);      // stream-ordered (staged if busy)
  std::vector<uint8_t> download(uint32_t h, size_t n, size_t offset);         // synchronizes first
  size_t size_of(uint32_t h);
  // Queues a launch; throws at once if the kernel is unknown or the arguments do not fit its signature.
  void launch(const std::string &kernel, const std::vector<uint32_t> &bufs, const std::vector<double> &scalars,
              MathMode mode, int parts, uint32_t faults = 0);
  void synchronize();  // throws std::runtime_error with the first fault since the last synchronize
  uint32_t record_event();
  void wait_event(uint32_t e);
  bool query_event(uint32_t e);

  MathMode math_mode = MathMode::Ascend;
  int parts = 32;
  std::map<std::string, KernelStats> stats();
  void reset_stats();

  // Called from KernelCall::check on the worker thread.
  uint8_t *check_access(const KernelCall &call, int arg, size_t off, size_t n, Access access);
  void run_parts(int parts, const std::function<void(int)> &body);

 private:
  struct Buffer {
    std::string tag;
    std::unique_ptr<uint8_t[]> mem;  // null once evicted from quarantine
    std::shared_ptr<FileMapping> file;  // a mapped weight: its bytes are file->base + file_off
    size_t file_off = 0;
    uint8_t *data() const { return mem ? mem.get() : file ? const_cast<uint8_t *>(file->base) + file_off : nullptr; }
    // device memory it holds: a mapped weight holds none (its bytes are the file's)
    size_t held() const { return mem ? bytes : 0; }
    size_t bytes = 0;
    bool freed = false;
    // The latest launch that names this buffer, and its first declared access (for frees that come
    // after that launch ran but before the host synchronized with it).
    uint64_t last_seq = 0, access_seq = 0;
    std::string access_who;  // "kernel 'name'" or "upload"
    size_t access_off = 0, access_n = 0;
    Access access = Access::Read;
  };
  struct Op {
    enum Kind { Launch, Upload, Event } kind = Event;
    const KernelSig *kernel = nullptr;
    std::vector<uint32_t> bufs;
    std::vector<double> scalars;
    std::vector<Span> spans;
    MathMode mode = MathMode::Ascend;
    uint32_t faults = 0;
    int parts = 32;
    std::vector<uint8_t> data;  // upload payload
    size_t offset = 0;
    uint32_t event = 0;
    uint64_t seq = 0;  // launch sequence number (events: the last launch before them)
  };
  struct DeclaredRange { uint32_t id; size_t off, n; Access access; };

  void worker_loop();
  void execute(Op &op);
  uint32_t add_buffer(Buffer b);
  Buffer &live(uint32_t h, const char *what);
  void poison(Buffer &b);
  void evict_quarantine();
  bool running_uses(uint32_t h) const;
  void note_access(Buffer &b, uint64_t seq, const std::string &who, size_t off, size_t n, Access access);
  [[noreturn]] void throw_fault_locked();

  std::mutex mu_;
  std::condition_variable queue_cv_, idle_cv_;
  std::deque<Op> queue_;
  bool busy_ = false, stop_ = false;
  std::thread worker_;
  std::unique_ptr<PartsPool> pool_;

  std::map<uint32_t, Buffer> buffers_;
  std::deque<uint32_t> quarantine_;
  size_t quarantine_bytes_ = 0;
  uint32_t next_handle_ = 1;

  // The launch executing now and the ranges it declared (for frees that race with it).
  const KernelCall *running_ = nullptr;
  std::vector<DeclaredRange> running_accesses_;
  std::vector<uint32_t> poison_after_running_;

  uint64_t launch_seq_ = 0, completed_seq_ = 0, host_synced_seq_ = 0;
  std::map<uint32_t, uint64_t> event_seq_;
  uint64_t running_seq_ = 0;

  std::string fault_;  // first fault since the last synchronize; later launches are skipped
  uint32_t next_event_ = 1;
  std::map<uint32_t, bool> events_;
  std::map<std::string, KernelStats> stats_;
  std::map<std::string, const KernelSig *> kernels_;
};

}  // namespace ds4
