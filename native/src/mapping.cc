// File mappings (see mapping.h) and the native memory bandwidth measurement bench/ reports against.
#include "mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ds4 {

FileMapping::~FileMapping() {
  if (base) munmap(const_cast<uint8_t *>(base), size);
}

static std::mutex g_mu;
static std::map<uint32_t, std::shared_ptr<FileMapping>> g_maps;
static uint32_t g_next = 1;

uint32_t map_file(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw std::runtime_error(std::string("map: fstat failed: ") + std::strerror(errno));
  if (st.st_size <= 0) throw std::runtime_error("map: the file is empty");
  void *p = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw std::runtime_error(std::string("map: mmap failed: ") + std::strerror(errno));
  auto m = std::make_shared<FileMapping>();
  m->base = static_cast<const uint8_t *>(p);
  m->size = (size_t)st.st_size;
  std::lock_guard<std::mutex> lk(g_mu);
  const uint32_t id = g_next++;
  g_maps[id] = std::move(m);
  return id;
}

std::shared_ptr<FileMapping> mapping(uint32_t id) {
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_maps.find(id);
  return it == g_maps.end() ? nullptr : it->second;
}

void unmap_file(uint32_t id) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_maps.erase(id);
}

// One thread's pass: sum 64-bit words 8 at a time (independent accumulators, so the loads, not the adds,
// bound it); built for AVX-512, AVX2 and a portable baseline, the loader picks what the CPU has.
__attribute__((target_clones("avx512f", "avx2", "default")))
static uint64_t sum_words(const uint64_t *p, size_t n) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += p[i + k];
  uint64_t t = 0;
  for (int k = 0; k < 8; k++) t += s[k];
  return t;
}

double read_bandwidth(size_t bytes, int threads, int reps) {
  const size_t words = bytes / 8;
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; i++) buf[i] = i;  // touch every page before timing
  threads = std::max(1, threads);
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; r++) {
    std::vector<std::thread> ts;
    std::vector<uint64_t> sums(threads);
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; t++) {
      const size_t a = words * t / threads, b = words * (t + 1) / threads;
      ts.emplace_back([&, t, a, b] { sums[t] = sum_words(buf.data() + a, b - a); });
    }
    for (auto &t : ts) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : sums) sink = sink + v;
    best = std::max(best, (double)words * 8 / s);
  }
  return best;
}

}  // namespace ds4
