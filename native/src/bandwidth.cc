// The machine's memory read bandwidth, measured natively (bench/ reports fractions of it).
#include "bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace ds4 {

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
