// What bench/ measures natively: this machine's memory read bandwidth, and a child process's wall time,
// CPU time and peak RSS (the figures its whole-process comparisons are made of).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ds4 {

// Memory read bandwidth in bytes/s: `threads` threads summing disjoint parts of a `bytes`-byte buffer
// with the widest vector loads the CPU has, best of `reps` passes.
double read_bandwidth(size_t bytes, int threads, int reps);

struct ProcessUsage {
  int status = 0;  // exit code, or 128 + the signal that ended it
  double wall_s = 0, user_s = 0, sys_s = 0;
  uint64_t max_rss_bytes = 0;
};

// Runs argv[0] (found on PATH) with argv, stdout and stderr into the files given (empty: /dev/null), and
// reports its own usage (wait4: this child alone, whatever else the caller runs).
ProcessUsage run_measured(const std::vector<std::string> &argv, const std::string &out_path, const std::string &err_path);

}  // namespace ds4
