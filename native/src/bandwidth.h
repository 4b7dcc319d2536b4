// The machine's memory read bandwidth, measured natively (bench/ reports fractions of it).
#pragma once

#include <cstddef>

namespace ds4 {

// Bytes/s: `threads` threads summing disjoint parts of a `bytes`-byte buffer with the widest vector loads
// the CPU has, best of `reps` passes.
double read_bandwidth(size_t bytes, int threads, int reps);

}  // namespace ds4
