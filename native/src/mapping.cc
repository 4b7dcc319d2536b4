// File mappings (see mapping.h).
#include "mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

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

}  // namespace ds4
