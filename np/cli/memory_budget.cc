// The `netpol` command's memory budget: every operator new of the process is counted, and an
// allocation that would take the heap past the budget fails with std::bad_alloc instead of
// growing until the kernel or the allocator gives up. np's library turns that into a
// ResourceExhausted status (np/loader.h, np/cluster.h); main() catches what is left, so the
// command always ends with a message and exit code 2, never an abort (SIGABRT).
//
// Counting uses malloc_usable_size, so the figure is the heap the allocator hands out (not the
// pages the kernel maps). C code that calls malloc directly (libc's stdio buffers, yaml-cpp's
// and protobuf's small C parts) is not counted; it is small next to np's own data.
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "np/cli/cli.h"

namespace {

std::atomic<int64_t> live_bytes{0};
std::atomic<int64_t> budget_bytes{INT64_MAX};
std::atomic<bool> refused{false};

void* Allocate(size_t size, size_t alignment, bool nothrow) {
  if (size == 0) size = 1;
  void* p = alignment <= alignof(std::max_align_t) ? std::malloc(size)
                                                   : std::aligned_alloc(alignment,
                                                                        (size + alignment - 1) /
                                                                            alignment * alignment);
  if (p != nullptr) {
    const int64_t usable = static_cast<int64_t>(malloc_usable_size(p));
    const int64_t now = live_bytes.fetch_add(usable, std::memory_order_relaxed) + usable;
    if (now <= budget_bytes.load(std::memory_order_relaxed)) return p;
    live_bytes.fetch_sub(usable, std::memory_order_relaxed);
    std::free(p);
    refused.store(true, std::memory_order_relaxed);
  }
  if (nothrow) return nullptr;
  throw std::bad_alloc();
}

void Release(void* p) {
  if (p == nullptr) return;
  live_bytes.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}

}  // namespace

namespace np::cli {

int64_t MemoryBudgetFor(int64_t input_bytes) {
  // np needs a few bytes of memory per input byte (a node of the YAML tree per few bytes, an
  // object per few dozen); 100 leaves room for the engine and the backends, and 1 GiB for
  // small inputs with big clusters in them.
  const int64_t wanted = std::max(int64_t{1} << 30, input_bytes * kMemoryPerInputByte);
  return std::min(wanted, MemoryAvailable());
}

int64_t MemoryAvailable() {
  // Three quarters of what the process may use: physical memory, or less under `ulimit -v`
  // (RLIMIT_AS, which also counts code and stacks, hence the quarter left over).
  int64_t limit = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    limit = std::min(limit, static_cast<int64_t>(rl.rlim_cur));
  }
  if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    limit = std::min(limit, static_cast<int64_t>(rl.rlim_cur));
  }
  return limit / 4 * 3;
}

void SetMemoryBudget(int64_t bytes) { budget_bytes.store(bytes, std::memory_order_relaxed); }
int64_t MemoryBudget() { return budget_bytes.load(std::memory_order_relaxed); }
bool MemoryBudgetRefused() { return refused.load(std::memory_order_relaxed); }

}  // namespace np::cli

void* operator new(size_t size) { return Allocate(size, 0, false); }
void* operator new[](size_t size) { return Allocate(size, 0, false); }
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return Allocate(size, 0, true);
}
void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return Allocate(size, 0, true);
}
void* operator new(size_t size, std::align_val_t a) {
  return Allocate(size, static_cast<size_t>(a), false);
}
void* operator new[](size_t size, std::align_val_t a) {
  return Allocate(size, static_cast<size_t>(a), false);
}
void* operator new(size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return Allocate(size, static_cast<size_t>(a), true);
}
void* operator new[](size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return Allocate(size, static_cast<size_t>(a), true);
}
void operator delete(void* p) noexcept { Release(p); }
void operator delete[](void* p) noexcept { Release(p); }
void operator delete(void* p, size_t) noexcept { Release(p); }
void operator delete[](void* p, size_t) noexcept { Release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { Release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { Release(p); }
void operator delete(void* p, std::align_val_t) noexcept { Release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { Release(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { Release(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { Release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { Release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { Release(p); }
