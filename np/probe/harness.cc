#include "np/probe/harness.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <new>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "np/backends/util.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::probe {
namespace {

std::string FamilyName(AddressFamily f) { return f == AddressFamily::kIPv6 ? "IPv6" : "IPv4"; }

const IpAddress* AddressOf(const std::vector<IpAddress>& ips, AddressFamily family) {
  for (const IpAddress& ip : ips) {
    if (ip.family() == family) return &ip;
  }
  return nullptr;
}

absl::StatusOr<std::shared_ptr<const Engine>> BuildEngine(const Cluster& cluster,
                                                          const EvaluationOptions& evaluation,
                                                          const std::string& node) {
  EngineOptions options;
  options.evaluation = evaluation;
  options.node_name = node;
  return Engine::Build(cluster, options);
}

absl::StatusOr<ir::CompiledPolicy> CompileNode(const Cluster& cluster,
                                               const EvaluationOptions& evaluation,
                                               const std::string& node) {
  absl::StatusOr<std::shared_ptr<const Engine>> engine = BuildEngine(cluster, evaluation, node);
  if (!engine.ok()) return engine.status();
  return LowerToIr(**engine);
}

constexpr char kSelfNote[] =
    "self pairs (the diagonal): a pod's traffic to its own address never leaves its network "
    "namespace, so no datapath sees it; they are probed and compared as always-allow-self";

}  // namespace

Harness::Harness(HarnessOptions options) : options_(std::move(options)) {}

Harness::~Harness() { (void)Close(); }

absl::Status Harness::Close() {
  absl::Status result;
  if (network_ != nullptr) {
    for (auto& [node, backend] : backends_) {
      absl::Status s = backend->Remove(network_->AttachmentFor(node));
      if (!s.ok() && result.ok()) result = s;
    }
    absl::Status s = network_->Destroy();
    if (!s.ok() && result.ok()) result = s;
  }
  backends_.clear();
  network_.reset();
  return result;
}

std::vector<Protocol> Harness::ProbedProtocols(std::vector<std::string>* notes) const {
  std::vector<Protocol> out;
  bool sctp = KernelHasSctp();
  for (Protocol p : options_.protocols) {
    if (p == Protocol::kSCTP && !sctp) {
      notes->push_back(
          "SCTP not probed: this kernel has no SCTP sockets (EPROTONOSUPPORT); the backend "
          "still gets the SCTP rules and the engine still decides SCTP flows");
      continue;
    }
    out.push_back(p);
  }
  return out;
}

std::vector<uint16_t> Harness::ProbedPorts(const Cluster& cluster) const {
  if (!options_.ports.empty()) return options_.ports;
  std::set<uint16_t> ports;
  for (int i = 0; i < cluster.pod_count(); ++i) {
    for (const k8s::Container& c : cluster.pod_object(i).spec().containers()) {
      for (const k8s::ContainerPort& p : c.ports()) {
        if (p.containerport() >= 1 && p.containerport() <= 65535) {
          ports.insert(static_cast<uint16_t>(p.containerport()));
        }
      }
    }
  }
  if (ports.empty()) ports.insert(80);
  ports.insert(options_.extra_ports.begin(), options_.extra_ports.end());
  return std::vector<uint16_t>(ports.begin(), ports.end());
}

absl::Status Harness::PrepareNetwork(const Cluster& cluster, std::vector<std::string>* notes) {
  absl::StatusOr<NetworkSpec> spec = NetworkSpecOf(cluster, notes);
  if (!spec.ok()) return spec.status();
  return PrepareNetwork(*spec);
}

absl::Status Harness::PrepareNetwork(const NetworkSpec& spec) {
  if (network_ != nullptr && network_->spec() == spec) return absl::OkStatus();
  if (absl::Status s = Close(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<TestNetwork>> network =
      TestNetwork::Create(spec, options_.agent_command);
  if (!network.ok()) return network.status();
  network_ = *std::move(network);
  return absl::OkStatus();
}

absl::StatusOr<NetworkSpec> ChurnNetworkSpec(const NetworkSpec& a, const NetworkSpec& b,
                                             std::vector<std::string>* notes) {
  NetworkSpec joined = a;
  for (const PodSpec& pod : b.pods) {
    PodSpec* same = nullptr;
    for (PodSpec& held : joined.pods) {
      bool overlap = false;
      for (const IpAddress& ip : pod.ips) {
        overlap |= std::find(held.ips.begin(), held.ips.end(), ip) != held.ips.end();
      }
      if (!overlap) continue;
      if (held.ips != pod.ips || held.node != pod.node) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the update test needs each address on one pod of one node in both sets: ",
            pod.key, " and ", held.key, " hold some of the same addresses but not all, or on "
            "different nodes"));
      }
      same = &held;
      break;
    }
    if (same == nullptr) {
      bool taken = false;
      for (const PodSpec& held : joined.pods) taken |= held.key == pod.key;
      if (taken) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the update test cannot move a pod to other addresses: ", pod.key,
            " has different addresses in the two sets"));
      }
      notes->push_back(absl::StrCat(pod.key, " is only in --swap-with: in the -f set its "
                                    "addresses are outside the cluster"));
      joined.pods.push_back(pod);
    } else if (same->key != pod.key) {
      notes->push_back(absl::StrCat(same->key, " (-f) and ", pod.key,
                                    " (--swap-with) hold the same addresses: one namespace "
                                    "probes both (an address reused by a new pod)"));
      same->key = absl::StrCat(same->key, "|", pod.key);
    }
  }
  for (const PodSpec& pod : a.pods) {
    bool kept = false;
    for (const PodSpec& other : b.pods) kept |= other.ips == pod.ips;
    if (!kept) {
      notes->push_back(absl::StrCat(pod.key, " is only in -f: in the --swap-with set its "
                                    "addresses are outside the cluster"));
    }
  }
  return joined;
}

absl::Status Harness::Install(const Cluster& cluster, std::vector<ir::AddressRange>* ranges) {
  for (const std::string& node : network_->nodes()) {
    absl::StatusOr<ir::CompiledPolicy> ir = CompileNode(cluster, options_.evaluation, node);
    if (!ir.ok()) return ir.status();
    if (ranges != nullptr) {
      ranges->insert(ranges->end(), ir->ipv4().begin(), ir->ipv4().end());
      ranges->insert(ranges->end(), ir->ipv6().begin(), ir->ipv6().end());
    }
    std::unique_ptr<backends::Backend>& backend = backends_[node];
    if (backend == nullptr) {
      backend = options_.backend_factory ? options_.backend_factory()
                                         : backends::MakeBackend(options_.backend);
      if (backend == nullptr) {
        backends_.erase(node);
        return absl::InvalidArgumentError(absl::StrCat(
            "no backend \"", options_.backend, "\" in this build (nft, iptables, ebpf)"));
      }
    }
    if (absl::Status s = backend->Apply(*ir, network_->AttachmentFor(node)); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("applying the ", options_.backend,
                                                 " program on ", node.empty() ? "the node" : node,
                                                 ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

namespace {

// Addresses no test network may use: unspecified, loopback, link-local (the gateways),
// multicast, broadcast, class E, IPv4-mapped.
bool Special(const IpAddress& a) {
  if (a.is_v4()) {
    uint32_t v = a.v4();
    return (v >> 24) == 0 || (v >> 24) == 127 || (v >> 16) == 0xa9fe || (v >> 28) >= 0xe;
  }
  uint64_t hi = a.hi(), lo = a.lo();
  if (hi == 0 && (lo <= 1 || (lo >> 32) == 0xffff)) return true;  // ::, ::1, ::ffff:0:0/96
  return (hi >> 54) == (0xfe80ull >> 6) || (hi >> 56) == 0xff;      // fe80::/10, ff00::/8
}

IpAddress FromBytes(const std::string& b) {
  const auto* u = reinterpret_cast<const uint8_t*>(b.data());
  if (b.size() == 4) {
    return IpAddress::V4((uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | u[3]);
  }
  return IpAddress::V6Bytes(u);
}

// The middle of [first, last] (byte strings of one length).
std::string Middle(const std::string& first, const std::string& last) {
  // (first + last) / 2, computed on bytes with a carry.
  std::string sum(first.size() + 1, '\0');
  int carry = 0;
  for (int i = static_cast<int>(first.size()) - 1; i >= 0; --i) {
    int v = static_cast<uint8_t>(first[i]) + static_cast<uint8_t>(last[i]) + carry;
    sum[i + 1] = static_cast<char>(v & 0xff);
    carry = v >> 8;
  }
  sum[0] = static_cast<char>(carry);
  std::string half(first.size(), '\0');
  int rest = 0;
  for (size_t i = 0; i < sum.size(); ++i) {
    int v = rest * 256 + static_cast<uint8_t>(sum[i]);
    if (i > 0) half[i - 1] = static_cast<char>(v / 2);
    rest = v % 2;
  }
  return half;
}

}  // namespace

std::vector<IpAddress> Harness::Externals(const std::vector<ir::AddressRange>& ranges,
                                          const Cluster& cluster) const {
  auto probed = [&](const IpAddress& a) {
    return std::find(options_.families.begin(), options_.families.end(), a.family()) !=
           options_.families.end();
  };
  std::set<IpAddress> out;
  for (const IpAddress& a : options_.external_addresses) {
    if (probed(a) && !cluster.PodByIp(a)) out.insert(a);
  }
  if (options_.sample_external) {
    std::vector<IpAddress> sampled[2];
    for (const ir::AddressRange& r : ranges) {
      if (!r.pod().empty() || r.first().size() != r.last().size()) continue;
      for (const std::string& candidate : {Middle(r.first(), r.last()), r.first(), r.last()}) {
        IpAddress a = FromBytes(candidate);
        if (Special(a) || cluster.PodByIp(a) || !probed(a)) continue;
        sampled[a.is_v6() ? 1 : 0].push_back(a);
        break;
      }
    }
    for (std::vector<IpAddress>& v : sampled) {
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
      // At most 16 per family, spread over the space.
      const size_t n = v.size();
      for (size_t k = 0; k < std::min<size_t>(n, 16); ++k) out.insert(v[k * n / std::min<size_t>(n, 16)]);
    }
  }
  return std::vector<IpAddress>(out.begin(), out.end());
}

absl::StatusOr<ScenarioReport> Harness::Probe(const Cluster& cluster, absl::string_view name) {
  absl::Time start = absl::Now();
  ScenarioReport report;
  report.name = std::string(name);
  report.backend = options_.backend;
  const int n = cluster.pod_count();
  for (int i = 0; i < n; ++i) {
    report.pods.push_back(cluster.pod(i).Key());
    report.pod_ips.push_back(cluster.pod(i).ips);
  }
  if (absl::Status s = PrepareNetwork(cluster, &report.notes); !s.ok()) return s;
  report.nodes = network_->nodes();
  // The addresses each pod has in the test network (a shared address only at its owner).
  {
    absl::flat_hash_map<std::string, const std::vector<IpAddress>*> net_ips;
    for (const PodSpec& p : network_->spec().pods) net_ips[p.key] = &p.ips;
    for (int i = 0; i < n; ++i) {
      auto it = net_ips.find(report.pods[i]);
      report.pod_ips[i] = it != net_ips.end() ? *it->second : std::vector<IpAddress>();
    }
  }
  std::vector<ir::AddressRange> ranges;
  if (absl::Status s = Install(cluster, &ranges); !s.ok()) return s;
  report.externals = Externals(ranges, cluster);
  if (absl::Status s = network_->SetExternalAddresses(report.externals); !s.ok()) return s;
  if (absl::Status s = network_->FlushConntrack(); !s.ok()) return s;
  std::vector<Protocol> protocols = ProbedProtocols(&report.notes);
  std::vector<uint16_t> ports = ProbedPorts(cluster);
  std::vector<std::pair<Protocol, uint16_t>> serve;
  for (Protocol p : protocols) {
    for (uint16_t port : ports) serve.push_back({p, port});
  }
  if (absl::Status s = network_->EnsureListening(serve); !s.ok()) return s;
  report.notes.push_back(kSelfNote);

  absl::StatusOr<std::shared_ptr<const Engine>> engine =
      BuildEngine(cluster, options_.evaluation, "");
  if (!engine.ok()) return engine.status();
  // Cluster pod index -> network pod index (pods without an address are not in the network).
  std::vector<int> net_index(n, -1);
  absl::flat_hash_map<std::string, int> by_key;
  for (size_t i = 0; i < network_->spec().pods.size(); ++i) {
    by_key[network_->spec().pods[i].key] = static_cast<int>(i);
  }
  for (int i = 0; i < n; ++i) {
    auto it = by_key.find(report.pods[i]);
    if (it != by_key.end()) net_index[i] = it->second;
  }

  struct Where {
    size_t matrix;
    size_t cell;
  };
  std::vector<ProbeRequest> requests;
  std::vector<Where> where;
  for (Protocol protocol : protocols) {
    for (uint16_t port : ports) {
      for (AddressFamily family : options_.families) {
        ProbeMatrix m;
        m.family = family;
        m.protocol = protocol;
        m.port = port;
        m.cells.resize(static_cast<size_t>(n) * n);
        size_t mi = report.matrices.size();
        for (int s = 0; s < n; ++s) {
          const IpAddress* src = AddressOf(report.pod_ips[s], family);
          if (src == nullptr || net_index[s] < 0) continue;
          for (int d = 0; d < n; ++d) {
            const IpAddress* dst = AddressOf(report.pod_ips[d], family);
            if (dst == nullptr || net_index[d] < 0) continue;
            ProbeCell& cell = m.cells[static_cast<size_t>(s) * n + d];
            cell.probed = true;
            cell.expected = s == d || (*engine)->AllowedPacket(*src, *dst, protocol, port);
            requests.push_back(ProbeRequest{net_index[s], std::nullopt, *dst, protocol, port,
                                            options_.timeout_ms});
            where.push_back({mi, static_cast<size_t>(s) * n + d});
          }
        }
        report.matrices.push_back(std::move(m));
      }
    }
  }
  // Pods and the external addresses, both ways.
  struct ExternalWhere {
    size_t matrix;
    size_t cell;
    bool inbound;
  };
  std::vector<ExternalWhere> external_where;
  const size_t first_external_request = requests.size();
  const size_t ne = report.externals.size();
  if (ne > 0) {
    for (Protocol protocol : protocols) {
      for (uint16_t port : ports) {
        ExternalMatrix m;
        m.protocol = protocol;
        m.port = port;
        m.inbound.resize(ne * n);
        m.outbound.resize(ne * n);
        size_t mi = report.external_matrices.size();
        for (size_t e = 0; e < ne; ++e) {
          const IpAddress& ext = report.externals[e];
          for (int p = 0; p < n; ++p) {
            const IpAddress* pod = AddressOf(report.pod_ips[p], ext.family());
            if (pod == nullptr || net_index[p] < 0) continue;
            ProbeCell& in = m.inbound[e * n + p];
            in.probed = true;
            in.expected = (*engine)->AllowedPacket(ext, *pod, protocol, port);
            requests.push_back(ProbeRequest{network_->external_agent(), ext, *pod, protocol,
                                            port, options_.timeout_ms});
            external_where.push_back({mi, e * n + p, true});
            ProbeCell& out = m.outbound[e * n + p];
            out.probed = true;
            out.expected = (*engine)->AllowedPacket(*pod, ext, protocol, port);
            requests.push_back(ProbeRequest{net_index[p], std::nullopt, ext, protocol, port,
                                            options_.timeout_ms});
            external_where.push_back({mi, e * n + p, false});
          }
        }
        report.external_matrices.push_back(std::move(m));
      }
    }
  }
  auto cell_of = [&](size_t r) -> ProbeCell& {
    if (r < first_external_request) return report.matrices[where[r].matrix].cells[where[r].cell];
    const ExternalWhere& w = external_where[r - first_external_request];
    ExternalMatrix& m = report.external_matrices[w.matrix];
    return w.inbound ? m.inbound[w.cell] : m.outbound[w.cell];
  };
  absl::StatusOr<std::vector<ProbeOutcome>> outcomes = network_->Run(requests);
  if (!outcomes.ok()) return outcomes.status();
  std::vector<ProbeRequest> retry;
  std::vector<size_t> retry_of;
  for (size_t r = 0; r < requests.size(); ++r) {
    ProbeCell& cell = cell_of(r);
    cell.observed = (*outcomes)[r].connected();
    cell.status = (*outcomes)[r].status;
    if (cell.expected && !cell.observed) {
      ProbeRequest again = requests[r];
      again.timeout_ms = options_.retry_timeout_ms;
      retry.push_back(again);
      retry_of.push_back(r);
    }
  }
  if (!retry.empty()) {
    absl::StatusOr<std::vector<ProbeOutcome>> again = network_->Run(retry);
    if (!again.ok()) return again.status();
    for (size_t r = 0; r < retry.size(); ++r) {
      ProbeCell& cell = cell_of(retry_of[r]);
      cell.observed = (*again)[r].connected();
      cell.status = (*again)[r].status;
    }
  }
  report.probes = static_cast<int>(requests.size());
  report.retried = static_cast<int>(retry.size());
  for (const ProbeMatrix& m : report.matrices) {
    for (const ProbeCell& c : m.cells) report.mismatches += c.mismatch() ? 1 : 0;
  }
  for (const ExternalMatrix& m : report.external_matrices) {
    for (const ProbeCell& c : m.inbound) report.mismatches += c.mismatch() ? 1 : 0;
    for (const ProbeCell& c : m.outbound) report.mismatches += c.mismatch() ? 1 : 0;
  }
  report.elapsed = absl::Now() - start;
  return report;
}

absl::StatusOr<UpdateReport> Harness::UpdateTest(const Cluster& a, const Cluster& b, int swaps,
                                                 absl::Duration max_time) {
  absl::Time start = absl::Now();
  UpdateReport report;
  report.backend = options_.backend;
  absl::StatusOr<NetworkSpec> spec_a = NetworkSpecOf(a);
  if (!spec_a.ok()) return spec_a.status();
  absl::StatusOr<NetworkSpec> spec_b = NetworkSpecOf(b);
  if (!spec_b.ok()) return spec_b.status();
  // Pods may come, go, be relabelled or leave their address to a new pod between the two
  // sets: the network holds every address of either, and a pod missing from one set is, in
  // that set, an address outside the cluster (as the engine sees it).
  absl::StatusOr<NetworkSpec> spec = ChurnNetworkSpec(*spec_a, *spec_b, &report.notes);
  if (!spec.ok()) return spec.status();
  if (spec->Nodes().size() != 1) {
    return absl::InvalidArgumentError(
        "the update test swaps one node's program: give clusters whose pods are on one node");
  }
  if (absl::Status s = PrepareNetwork(*spec); !s.ok()) return s;
  const std::string node = network_->nodes().front();
  absl::StatusOr<ir::CompiledPolicy> ir_a = CompileNode(a, options_.evaluation, node);
  if (!ir_a.ok()) return ir_a.status();
  absl::StatusOr<ir::CompiledPolicy> ir_b = CompileNode(b, options_.evaluation, node);
  if (!ir_b.ok()) return ir_b.status();
  if (absl::Status s = Install(a); !s.ok()) return s;
  if (absl::Status s = network_->FlushConntrack(); !s.ok()) return s;
  std::vector<Protocol> protocols = ProbedProtocols(&report.notes);
  std::vector<uint16_t> ports = ProbedPorts(a);
  for (uint16_t port : ProbedPorts(b)) {
    if (std::find(ports.begin(), ports.end(), port) == ports.end()) ports.push_back(port);
  }
  std::vector<std::pair<Protocol, uint16_t>> serve;
  for (Protocol p : protocols) {
    for (uint16_t port : ports) serve.push_back({p, port});
  }
  if (absl::Status s = network_->EnsureListening(serve); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<const Engine>> engine_a = BuildEngine(a, options_.evaluation, "");
  if (!engine_a.ok()) return engine_a.status();
  absl::StatusOr<std::shared_ptr<const Engine>> engine_b = BuildEngine(b, options_.evaluation, "");
  if (!engine_b.ok()) return engine_b.status();

  const std::vector<PodSpec>& pods = network_->spec().pods;
  std::vector<ProbeRequest> requests;
  std::vector<bool> must_deny;
  std::vector<std::string> label;
  // A violation is a connection, which takes microseconds here; the timeout of a denied
  // flow's probe only paces the rounds, and short rounds overlap more swaps. A flow both
  // sets allow is probed with one packet and 900 ms (agent.h, `once`): under the kernel's
  // 1 s SYN retransmission, so a failure is that packet dropped, not a slow machine — which
  // gets 900 ms to answer.
  const int denied_timeout_ms = std::min(options_.timeout_ms, 100);
  constexpr int kAllowedTimeoutMs = 900;
  for (AddressFamily family : options_.families) {
    for (Protocol protocol : protocols) {
      for (uint16_t port : ports) {
        for (size_t s = 0; s < pods.size(); ++s) {
          const IpAddress* src = AddressOf(pods[s].ips, family);
          if (src == nullptr) continue;
          for (size_t d = 0; d < pods.size(); ++d) {
            const IpAddress* dst = AddressOf(pods[d].ips, family);
            if (dst == nullptr || s == d) continue;
            bool in_a = (*engine_a)->AllowedPacket(*src, *dst, protocol, port);
            bool in_b = (*engine_b)->AllowedPacket(*src, *dst, protocol, port);
            if (in_a != in_b) continue;
            // A both-allowed probe keeps watching its one packet's answer past the 900 ms
            // (agent.h `once:WATCH_MS`): an answer then is a stalled agent at either end
            // ("late"), no answer at all a drop.
            requests.push_back(ProbeRequest{static_cast<int>(s), std::nullopt, *dst, protocol,
                                            port, in_a ? kAllowedTimeoutMs : denied_timeout_ms,
                                            /*once=*/in_a,
                                            /*watch_ms=*/in_a ? options_.retry_timeout_ms : 0});
            must_deny.push_back(!in_a);
            label.push_back(absl::StrCat(FamilyName(family), " ", ProtocolName(protocol), "/",
                                         port, " ", pods[s].key, " -> ", pods[d].key));
            (in_a ? report.allowed_flows : report.denied_flows)++;
          }
        }
      }
    }
  }
  if (report.denied_flows == 0) {
    report.notes.push_back("no flow is denied by both policy sets: nothing can be violated");
  }

  backends::Backend* backend = backends_[node].get();
  const backends::Attachment attachment = network_->AttachmentFor(node);
  const absl::Time stop_at = start + max_time;
  std::atomic<int> applied{0};
  std::atomic<bool> swapper_done{false};
  std::mutex error_mutex;
  absl::Status swap_error;
  std::thread swapper([&] {
    // Nothing may escape a thread: running out of memory (netpol's budget, np/cli) would
    // terminate the process without cleaning the namespaces up.
    try {
      for (int i = 0; i < swaps; ++i) {
        if (Interrupted() || absl::Now() >= stop_at) break;
        // Each swap is an update from the program the previous one installed, as an agent
        // makes it: a backend's incremental path (Backend::Update) is what this test judges.
        const ir::CompiledPolicy& next = i % 2 == 0 ? *ir_b : *ir_a;
        const ir::CompiledPolicy& previous = i % 2 == 0 ? *ir_a : *ir_b;
        absl::Status s = backend->Update(previous, next, attachment);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(error_mutex);
          swap_error = s;
          break;
        }
        applied.fetch_add(1);
        absl::SleepFor(absl::Milliseconds(15));
      }
    } catch (const std::bad_alloc&) {
      std::lock_guard<std::mutex> lock(error_mutex);
      swap_error = absl::ResourceExhaustedError("swapping the programs ran out of memory");
    }
    swapper_done.store(true);
  });
  absl::Status probe_error;
  std::vector<size_t> dropped;  // requests of both-allowed flows that failed, once each
  do {
    if (Interrupted()) {
      probe_error = absl::CancelledError("interrupted");
      break;
    }
    int before = applied.load();
    absl::StatusOr<std::vector<ProbeOutcome>> outcomes = network_->Run(requests);
    int after = applied.load();
    if (!outcomes.ok()) {
      probe_error = outcomes.status();
      break;
    }
    ++report.rounds;
    report.probes += static_cast<int64_t>(requests.size());
    for (size_t r = 0; r < requests.size(); ++r) {
      bool connected = (*outcomes)[r].connected();
      if (must_deny[r] && connected) {
        report.violations.push_back(absl::StrCat(label[r], " connected in round ",
                                                 report.rounds, " (during swaps ", before, "..",
                                                 after, ")"));
      } else if (!must_deny[r] && (*outcomes)[r].status == "late") {
        report.max_late_ms = std::max(report.max_late_ms, (*outcomes)[r].millis);
        if (++report.allowed_late <= 5) {
          report.allowed_late_examples.push_back(absl::StrCat(
              label[r], ": answered after ", (*outcomes)[r].millis, "ms (",
              (*outcomes)[r].detail, ") in round ", report.rounds, " (during swaps ", before,
              "..", after, ")"));
        }
      } else if (!must_deny[r] && !connected) {
        if (++report.allowed_failures <= 10) {
          dropped.push_back(r);
          report.allowed_failure_examples.push_back(absl::StrCat(
              label[r], ": ", (*outcomes)[r].status, " after ", (*outcomes)[r].millis,
              "ms in round ", report.rounds, " (during swaps ", before, "..", after, ")"));
        }
      }
    }
  } while (!swapper_done.load() && absl::Now() < stop_at && report.rounds < 100000);
  swapper.join();
  report.swaps = applied.load();
  if (probe_error.ok() && !dropped.empty()) {
    // Each dropped flow once more, after the swaps, with the scenario's retry timeout and
    // re-sends: "connected" says the drop was a window of the swap, "not connected" that
    // the final program closes it (both fail the test; the report tells them apart).
    std::vector<ProbeRequest> again;
    for (size_t r : dropped) {
      ProbeRequest q = requests[r];
      q.timeout_ms = options_.retry_timeout_ms;
      q.once = false;
      again.push_back(q);
    }
    absl::StatusOr<std::vector<ProbeOutcome>> outcomes = network_->Run(again);
    if (!outcomes.ok()) {
      probe_error = outcomes.status();
    } else {
      for (size_t i = 0; i < dropped.size(); ++i) {
        const ProbeOutcome& o = (*outcomes)[i];
        absl::StrAppend(&report.allowed_failure_examples[i], "; after the swaps: ",
                        o.connected() ? "connected" : o.status, " in ", o.millis, "ms");
      }
    }
  }
  report.elapsed = absl::Now() - start;
  if (!probe_error.ok()) return probe_error;
  if (!swap_error.ok()) return swap_error;
  return report;
}

std::string FormatJson(const ScenarioReport& report) {
  const size_t n = report.pods.size();
  // One table per (protocol, port), in the order they were probed; a pair's cell is what was
  // observed in its flow family (np::FlowFamily: IPv4 when both have it, else IPv6).
  std::vector<TruthTable> tables;
  for (const ProbeMatrix& m : report.matrices) {
    bool seen = false;
    for (const TruthTable& t : tables) seen |= t.protocol == m.protocol && t.port == m.port;
    if (!seen) tables.push_back(TruthTable{m.protocol, m.port, std::vector<uint8_t>(n * n, 0)});
  }
  for (TruthTable& table : tables) {
    const ProbeMatrix* by_family[2] = {nullptr, nullptr};
    for (const ProbeMatrix& m : report.matrices) {
      if (m.protocol == table.protocol && m.port == table.port) {
        by_family[m.family == AddressFamily::kIPv6 ? 1 : 0] = &m;
      }
    }
    for (size_t s = 0; s < n; ++s) {
      for (size_t d = 0; d < n; ++d) {
        for (int f = 0; f < 2; ++f) {
          AddressFamily family = f == 0 ? AddressFamily::kIPv4 : AddressFamily::kIPv6;
          if (AddressOf(report.pod_ips[s], family) == nullptr ||
              AddressOf(report.pod_ips[d], family) == nullptr) {
            continue;
          }
          if (by_family[f] == nullptr) continue;
          const ProbeCell& cell = by_family[f]->cells[s * n + d];
          if (!cell.probed) continue;
          table.allowed[s * n + d] = cell.observed ? 1 : 0;
          break;
        }
      }
    }
  }
  return TruthTablesJson(report.pods, tables);
}

std::string FormatText(const ScenarioReport& report, bool tables) {
  const size_t n = report.pods.size();
  std::string out;
  std::set<std::string> families, protocols, ports;
  for (const ProbeMatrix& m : report.matrices) {
    families.insert(FamilyName(m.family));
    protocols.insert(std::string(ProtocolName(m.protocol)));
    ports.insert(absl::StrCat(m.port));
  }
  absl::StrAppend(&out, "backend ", report.backend, " on ",
                  report.nodes.size() == 1 && report.nodes[0].empty()
                      ? "one node"
                      : absl::StrJoin(report.nodes, ", "),
                  ": ", n, " pods",
                  report.externals.empty() ? ""
                                           : absl::StrCat(" and ", report.externals.size(),
                                                          " external addresses"),
                  "; ", absl::StrJoin(families, "+"), "; ",
                  absl::StrJoin(protocols, ","), " on port(s) ", absl::StrJoin(ports, ","),
                  "\n");
  for (const std::string& note : report.notes) absl::StrAppend(&out, "note: ", note, "\n");
  if (tables) {
    size_t width = 3;
    for (const std::string& p : report.pods) width = std::max(width, p.size());
    for (const ProbeMatrix& m : report.matrices) {
      std::string title =
          absl::StrCat(FamilyName(m.family), " ", ProtocolName(m.protocol), "/", m.port);
      size_t first = std::max(width, title.size());
      absl::StrAppend(&out, "\n", absl::StrFormat("%-*s", first, title));
      for (const std::string& p : report.pods) absl::StrAppend(&out, " ", absl::StrFormat("%*s", width, p));
      absl::StrAppend(&out, "\n");
      for (size_t s = 0; s < n; ++s) {
        absl::StrAppend(&out, absl::StrFormat("%-*s", first, report.pods[s]));
        for (size_t d = 0; d < n; ++d) {
          const ProbeCell& c = m.cells[s * n + d];
          std::string symbol = !c.probed ? "-" : c.observed ? "." : "X";
          if (c.mismatch()) symbol = "!" + symbol;
          absl::StrAppend(&out, " ", absl::StrFormat("%*s", width, symbol));
        }
        absl::StrAppend(&out, "\n");
      }
    }
    absl::StrAppend(&out,
                    "\nrows: source pod; columns: destination pod; \".\" connected, \"X\" did "
                    "not, \"-\" not probed, \"!\" differs from the engine\n");
    if (!report.external_matrices.empty()) {
      size_t ext_width = 5;
      for (const IpAddress& e : report.externals) ext_width = std::max(ext_width, e.ToString().size());
      for (const ExternalMatrix& m : report.external_matrices) {
        std::string title = absl::StrCat("external ", ProtocolName(m.protocol), "/", m.port);
        size_t first = std::max(ext_width, title.size());
        absl::StrAppend(&out, "\n", absl::StrFormat("%-*s", first, title));
        for (const std::string& p : report.pods) absl::StrAppend(&out, " ", absl::StrFormat("%*s", width, p));
        absl::StrAppend(&out, "\n");
        for (size_t e = 0; e < report.externals.size(); ++e) {
          absl::StrAppend(&out, absl::StrFormat("%-*s", first, report.externals[e].ToString()));
          for (size_t p = 0; p < n; ++p) {
            auto symbol = [](const ProbeCell& c) {
              std::string s = !c.probed ? "-" : c.observed ? "." : "X";
              return c.mismatch() ? "!" + s : s;
            };
            absl::StrAppend(&out, " ", absl::StrFormat("%*s", width,
                                                       absl::StrCat(symbol(m.inbound[e * n + p]), "/",
                                                                    symbol(m.outbound[e * n + p]))));
          }
          absl::StrAppend(&out, "\n");
        }
      }
      absl::StrAppend(&out,
                      "\nexternal: rows: an address outside the cluster; each cell \"in/out\": "
                      "from that address to the pod, and from the pod to it\n");
    }
  }
  if (report.mismatches > 0) {
    absl::StrAppend(&out, "\nmismatches with the engine:\n");
    for (const ProbeMatrix& m : report.matrices) {
      for (size_t s = 0; s < n; ++s) {
        for (size_t d = 0; d < n; ++d) {
          const ProbeCell& c = m.cells[s * n + d];
          if (!c.mismatch()) continue;
          const IpAddress* dst = AddressOf(report.pod_ips[d], m.family);
          absl::StrAppend(&out, "  ", FamilyName(m.family), " ", ProtocolName(m.protocol), "/",
                          m.port, " ", report.pods[s], " -> ", report.pods[d], " (",
                          dst ? dst->ToString() : "?", "): ",
                          c.observed ? "connected" : absl::StrCat("not connected (", c.status, ")"),
                          ", the engine ", c.expected ? "allows" : "denies",
                          s == d ? " (self)" : "", "\n");
        }
      }
    }
  }
  if (report.mismatches > 0) {
    for (const ExternalMatrix& m : report.external_matrices) {
      for (size_t e = 0; e < report.externals.size(); ++e) {
        for (size_t p = 0; p < n; ++p) {
          for (bool inbound : {true, false}) {
            const ProbeCell& c = inbound ? m.inbound[e * n + p] : m.outbound[e * n + p];
            if (!c.mismatch()) continue;
            std::string ext = report.externals[e].ToString();
            absl::StrAppend(&out, "  external ", ProtocolName(m.protocol), "/", m.port, " ",
                            inbound ? ext : report.pods[p], " -> ",
                            inbound ? report.pods[p] : ext, ": ",
                            c.observed ? "connected" : absl::StrCat("not connected (", c.status, ")"),
                            ", the engine ", c.expected ? "allows" : "denies", "\n");
          }
        }
      }
    }
  }
  absl::StrAppend(&out, report.mismatches == 0 ? "PASS" : "FAIL",
                  report.name.empty() ? "" : absl::StrCat(" ", report.name), ": ",
                  report.mismatches == 0
                      ? absl::StrCat(report.probes, " probes match the engine")
                      : absl::StrCat(report.mismatches, " of ", report.probes,
                                     " probes differ from the engine"),
                  absl::StrFormat(" (%d retried, %.2fs)", report.retried,
                                  absl::ToDoubleSeconds(report.elapsed)),
                  "\n");
  return out;
}

std::string FormatUpdateReport(const UpdateReport& report) {
  std::string out;
  for (const std::string& note : report.notes) absl::StrAppend(&out, "note: ", note, "\n");
  absl::StrAppend(&out, "update test, backend ", report.backend, ": ", report.swaps,
                  " ruleset swaps, ", report.rounds, " probe rounds, ", report.probes,
                  " probes; ", report.denied_flows, " flows denied by both sets, ",
                  report.allowed_flows, " allowed by both\n");
  for (const std::string& e : report.allowed_failure_examples) {
    absl::StrAppend(&out, "  DROPPED (allowed by both, one packet, not answered): ", e, "\n");
  }
  if (report.allowed_failures > static_cast<int64_t>(report.allowed_failure_examples.size())) {
    absl::StrAppend(&out, "  ... and ",
                    report.allowed_failures -
                        static_cast<int64_t>(report.allowed_failure_examples.size()),
                    " more dropped\n");
  }
  for (const std::string& v : report.violations) absl::StrAppend(&out, "  VIOLATION: ", v, "\n");
  if (report.allowed_late > 0) {
    // Beside the verdict, never in it: the one packet was answered, only after the 900 ms.
    absl::StrAppend(&out, "  late, not dropped: ", report.allowed_late,
                    " probe(s) of both-allowed flows answered after the 900 ms (up to ",
                    report.max_late_ms, "ms: a slow agent or machine)\n");
    for (const std::string& e : report.allowed_late_examples) {
      absl::StrAppend(&out, "    LATE: ", e, "\n");
    }
  }
  absl::StrAppend(&out, report.passed() ? "PASS" : "FAIL", ": ", report.violations.size(),
                  " probe(s) of both-denied flows connected, ", report.allowed_failures,
                  " probe(s) of both-allowed flows dropped",
                  absl::StrFormat(" (%.2fs)", absl::ToDoubleSeconds(report.elapsed)), "\n");
  return out;
}

}  // namespace np::probe
