// Native measurements for bench/ (see measure.h).
#include "measure.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char **environ;

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

// A child's stdout or stderr: the file, created or truncated, or /dev/null.
static void redirect(posix_spawn_file_actions_t *fa, int fd, const std::string &path) {
  posix_spawn_file_actions_addopen(fa, fd, path.empty() ? "/dev/null" : path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
}

ProcessUsage run_measured(const std::vector<std::string> &argv, const std::string &out_path, const std::string &err_path) {
  if (argv.empty()) throw std::runtime_error("runMeasured: no command");
  std::vector<char *> args;
  for (const std::string &a : argv) args.push_back(const_cast<char *>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  redirect(&fa, 1, out_path);
  redirect(&fa, 2, err_path);
  pid_t pid;
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("runMeasured: cannot start " + argv[0] + ": " + std::strerror(rc));
  int status = 0;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0)
    if (errno != EINTR) throw std::runtime_error(std::string("runMeasured: wait4 failed: ") + std::strerror(errno));
  ProcessUsage u;
  u.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  u.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  u.user_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  u.sys_s = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  u.max_rss_bytes = (uint64_t)ru.ru_maxrss * 1024;  // Linux reports kilobytes
  return u;
}

}  // namespace ds4
