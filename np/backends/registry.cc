// MakeBackend: the backends by name. Each backend package adds its factory here when it
// lands (one declaration, one line in MakeBackend, one dep in BUILD.bazel).
#include "np/backends/backend.h"

namespace np::backends {

std::unique_ptr<Backend> MakeEbpfBackend(const BackendOptions& options);      // np/backends/ebpf
std::unique_ptr<Backend> MakeIptablesBackend(const BackendOptions& options);  // np/backends/iptables
std::unique_ptr<Backend> MakeNftBackend(const BackendOptions& options);       // np/backends/nft

std::unique_ptr<Backend> MakeBackend(absl::string_view name, const BackendOptions& options) {
  if (name == "ebpf") return MakeEbpfBackend(options);
  if (name == "iptables") return MakeIptablesBackend(options);
  if (name == "nft") return MakeNftBackend(options);
  return nullptr;
}

}  // namespace np::backends
