// Read-only mappings of model files, shared by everything in the process: the reference's weight views
// (JS on the main thread and in worker threads) and the simulated device's weight buffers read the file
// through one mapping, so a weight byte is never filled, copied or uploaded — the page cache serves it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace ds4 {

struct FileMapping {
  const uint8_t *base = nullptr;
  size_t size = 0;
  ~FileMapping();
};

// Maps the open file descriptor `fd` (its size at this moment) and registers the mapping under a new id.
uint32_t map_file(int fd);
// The mapping registered as `id`, or null once unmap_file(id) dropped it. Holders keep it alive: the
// memory is unmapped when the last holder (a JS view, a device buffer) lets go.
std::shared_ptr<FileMapping> mapping(uint32_t id);
void unmap_file(uint32_t id);

}  // namespace ds4
