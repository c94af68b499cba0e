// np/backends/ebpf/ebpf_backend.h — the eBPF datapath backend (`--backend ebpf`): a tc
// (clsact) program written for np (bpf/np_policy.c, bpf/np_dispatch.c), compiled by clang at
// build time and embedded, plus maps filled from the compiled IR by a libbpf loader.
//
//   std::unique_ptr<np::backends::Backend> b = np::backends::MakeEbpfBackend();
//   absl::StatusOr<std::string> maps = b->Render(ir);   // the maps' contents, readable
//   absl::Status s = b->Apply(ir, {{{"x/a", "veth-x-a"}}, "node"});  // attach, switch
//
// Apply attaches to the host-side veth of each pod in the Attachment (tc ingress decides
// what the pod sends, tc egress what it receives) and switches all of them to the new maps
// with one map update (loader.h explains the scheme). Needs CAP_BPF and CAP_NET_ADMIN.
//
// Thread safety: as np/backends/backend.h.
#ifndef NP_BACKENDS_EBPF_EBPF_BACKEND_H_
#define NP_BACKENDS_EBPF_EBPF_BACKEND_H_

#include <memory>

#include "np/backends/backend.h"

namespace np::backends {

std::unique_ptr<Backend> MakeEbpfBackend();

}  // namespace np::backends

#endif  // NP_BACKENDS_EBPF_EBPF_BACKEND_H_
