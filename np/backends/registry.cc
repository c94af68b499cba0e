// MakeBackend: the backends by name. Each backend package adds its factory here when it
// lands (one declaration, one line in MakeBackend, one dep in BUILD.bazel).
#include "np/backends/backend.h"

namespace np::backends {

std::unique_ptr<Backend> MakeEbpfBackend();      // np/backends/ebpf
std::unique_ptr<Backend> MakeIptablesBackend();  // np/backends/iptables
std::unique_ptr<Backend> MakeNftBackend();       // np/backends/nft

std::unique_ptr<Backend> MakeBackend(absl::string_view name) {
  if (name == "ebpf") return MakeEbpfBackend();
  if (name == "iptables") return MakeIptablesBackend();
  if (name == "nft") return MakeNftBackend();
  return nullptr;
}

}  // namespace np::backends
