// The eBPF backend on synthetic clusters (bench/cluster_generator.h), for issue 5 item 4:
//  - map entries per map as policies grow (100, 1k, 10k policies on 10k pods), compiled for
//    one node (node-0) as a CNI agent would;
//  - load time of a generation (verifier + map fill) and apply / replace / remove time on
//    veths in a network namespace of its own ("npebpfbench-<pid>", deleted at the end);
//  - the per-packet cost of the program: BPF_PROG_TEST_RUN with `repeat` on frames of flows
//    between the node's pods and the rest of the cluster (and outside addresses), each
//    checked against the IR read literally. SYN frames are always decided by policy (an
//    allowed one then refreshes its conntrack entry, written by the first of the `repeat`
//    runs); "established" frames are ACKs of allowed flows (one conntrack hit); ARP is the
//    floor (interface lookup, ethertype, pass) including BPF_PROG_TEST_RUN's own overhead.
//
//   bazel build //bench/backend_ebpf:backend_ebpf_bench
//   sudo bazel-bin/bench/backend_ebpf/backend_ebpf_bench [--flows FILE] [policies...]
// --flows FILE writes the probed flows ("src dst protocol port verdict" per line) so that
// another backend can be timed on the same ones.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/cluster_generator.h"
#include "bench/backend_timing.h"
#include "bench/synthetic_ir.h"
#include "np/backends/backend.h"
#include "np/backends/ebpf/ebpf_backend.h"
#include "np/backends/ebpf/loader.h"
#include "np/backends/ebpf/maps.h"
#include "np/backends/ebpf/testing/random_ir.h"
#include "np/backends/util.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::bench {
namespace {

using backends::ebpf::MapContents;
namespace ebpf = backends::ebpf;

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// The cluster compiled for `node`; with `extra` > 0, that many more allow policies (the same
// pods: what a replace installs).
absl::StatusOr<ir::CompiledPolicy> Compile(const SyntheticOptions& o, const std::string& node,
                                           int extra = 0) {
  return CompileSynthetic(o, node, extra);
}

struct Flow {
  IpAddress src, dst;
  uint8_t protocol = 6;
  uint16_t port = 0;
  int hook_endpoint = -1;  // endpoint whose interface sees it
  uint32_t hook = 0;
  bool allowed = false;
};

// Flows between the node's endpoints and pods elsewhere (both directions), among the
// node's endpoints, and to/from outside addresses; on the rules' ports and a few others.
std::vector<Flow> MakeFlows(const ir::CompiledPolicy& ir, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ebpf::testing::IrInterpreter interpreter(ir);
  std::vector<IpAddress> remote, local;
  for (const ir::AddressRange& r : ir.ipv4()) {
    if (r.pod().empty() || r.first().size() != 4) continue;
    const auto* b = reinterpret_cast<const uint8_t*>(r.first().data());
    remote.push_back(IpAddress::V4((uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) |
                                   (uint32_t{b[2]} << 8) | b[3]));
  }
  for (const ir::Endpoint& e : ir.endpoints()) {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<IpAddress> a = IpAddress::Parse(ip);
      if (a.ok() && a->is_v4()) local.push_back(*a);
    }
  }
  std::vector<uint16_t> ports = {80, 443, 53, 8080, 9090, 5432, 6379, 22};
  for (const ir::Table& t : ir.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      for (const ir::PortRule& r : d->rules()) ports.push_back(static_cast<uint16_t>(r.first_port()));
    }
  }
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  const IpAddress outside[] = {*IpAddress::Parse("8.8.8.8"), *IpAddress::Parse("192.168.1.10"),
                               *IpAddress::Parse("172.16.5.5")};
  // Addresses of each identity (pods and CIDR starts), to build flows that rules allow.
  std::vector<std::vector<IpAddress>> of_identity(ir.identities_size());
  for (const ir::AddressRange& r : ir.ipv4()) {
    const auto* b = reinterpret_cast<const uint8_t*>(r.first().data());
    if (r.identity() < of_identity.size() && of_identity[r.identity()].size() < 50) {
      of_identity[r.identity()].push_back(IpAddress::V4(
          (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3]));
    }
  }
  std::vector<Flow> flows;
  if (local.empty()) return flows;
  for (int i = 0; i < count; ++i) {
    Flow f;
    if (i % 2 == 0) {
      // A flow that some rule of a local endpoint names: the rule's first port, a peer of
      // its peer set (or anything, for `all`). Both sides still decide.
      const ir::Endpoint& e = ir.endpoints(static_cast<int>(rng() % ir.endpoints_size()));
      if (!e.selected() || e.ips().empty()) continue;
      const ir::Table& t = ir.tables(static_cast<int>(e.table()));
      bool ingress = rng() % 2 == 0;
      const ir::DirectionPolicy& d = ingress ? t.ingress() : t.egress();
      if (d.rules().empty()) continue;
      const ir::PortRule& rule = d.rules(static_cast<int>(rng() % d.rules_size()));
      const ir::PeerSet& set = ir.peer_sets(static_cast<int>(rule.peer_set()));
      IpAddress peer;
      if (set.all() || set.identities().empty()) {
        peer = remote.empty() ? outside[0] : remote[rng() % remote.size()];
      } else {
        const auto& addrs = of_identity[set.identities(static_cast<int>(rng() % set.identities_size()))];
        if (addrs.empty()) continue;
        peer = addrs[rng() % addrs.size()];
      }
      IpAddress me = *IpAddress::Parse(e.ips(0));
      if (!me.is_v4()) continue;
      f.src = ingress ? peer : me;
      f.dst = ingress ? me : peer;
      f.protocol = static_cast<uint8_t>(rule.protocol());
      f.port = static_cast<uint16_t>(rule.first_port());
      f.hook = ingress ? NP_HOOK_TO_ENDPOINT : NP_HOOK_FROM_ENDPOINT;
      f.hook_endpoint = interpreter.EndpointIndex(me);
      f.allowed = interpreter.Allowed(f.src, f.dst, f.protocol, f.port);
      flows.push_back(f);
      continue;
    }
    IpAddress me = local[rng() % local.size()];
    IpAddress other;
    switch (rng() % 4) {
      case 0:
      case 1:
        other = remote.empty() ? outside[0] : remote[rng() % remote.size()];
        break;
      case 2:
        other = local[rng() % local.size()];
        break;
      default:
        other = outside[rng() % 3];
        break;
    }
    bool outgoing = rng() % 2 == 0;
    f.src = outgoing ? me : other;
    f.dst = outgoing ? other : me;
    f.protocol = rng() % 5 == 0 ? 17 : 6;
    f.port = ports[rng() % ports.size()];
    f.hook = outgoing ? NP_HOOK_FROM_ENDPOINT : NP_HOOK_TO_ENDPOINT;
    f.hook_endpoint = interpreter.EndpointIndex(me);
    f.allowed = interpreter.Allowed(f.src, f.dst, f.protocol, f.port);
    flows.push_back(f);
  }
  return flows;
}

struct PacketCost {
  double allowed_median = -1, allowed_p90 = -1, denied_median = -1, denied_p90 = -1;
  double established_median = -1, arp = -1;
  int flows = 0, allowed = 0, mismatches = 0;
};

absl::StatusOr<PacketCost> MeasurePackets(const ir::CompiledPolicy& ir, const MapContents& maps,
                                          const std::vector<Flow>& flows, uint32_t repeat) {
  absl::StatusOr<std::unique_ptr<ebpf::Generation>> g = ebpf::Generation::Load(maps, {{1, 0}});
  if (!g.ok()) return g.status();
  PacketCost cost;
  std::vector<double> allowed, denied, established;
  uint16_t sport = 20000;
  for (const Flow& f : flows) {
    if (f.hook_endpoint < 0) continue;
    if (absl::Status s = (*g)->SetInterface(1, maps.endpoints[f.hook_endpoint]); !s.ok()) return s;
    ebpf::testing::FrameSpec spec;
    spec.src = f.src;
    spec.dst = f.dst;
    spec.protocol = f.protocol;
    spec.sport = sport++;
    spec.dport = f.port;
    spec.tcp_flags = 0x02;
    int fd = (*g)->program_fd(f.hook);
    if (f.protocol == 6) {
      // TCP: timed with `repeat` runs, as a SYN and (when allowed) as an established ACK.
      absl::StatusOr<ebpf::TestRunResult> r = ebpf::TestRun(fd, ebpf::testing::Frame(spec), 1, repeat);
      if (!r.ok()) return r.status();
      (f.allowed ? allowed : denied).push_back(r->duration_ns);
      if ((r->verdict == -1) != f.allowed) ++cost.mismatches;
      if (f.allowed) {
        spec.tcp_flags = 0x10;
        r = ebpf::TestRun(fd, ebpf::testing::Frame(spec), 1, repeat);
        if (!r.ok()) return r.status();
        established.push_back(r->duration_ns);
      }
    } else {
      // UDP/SCTP: verdict only (a first packet is policy, the next a conntrack hit).
      absl::StatusOr<ebpf::TestRunResult> r = ebpf::TestRun(fd, ebpf::testing::Frame(spec), 1, 1);
      if (!r.ok()) return r.status();
      if ((r->verdict == -1) != f.allowed) ++cost.mismatches;
    }
    ++cost.flows;
    cost.allowed += f.allowed ? 1 : 0;
  }
  absl::StatusOr<ebpf::TestRunResult> arp =
      ebpf::TestRun((*g)->program_fd(NP_HOOK_TO_ENDPOINT), ebpf::testing::ArpFrame(), 1, repeat);
  if (arp.ok()) cost.arp = arp->duration_ns;
  cost.allowed_median = Median(allowed);
  cost.allowed_p90 = Percentile(allowed, 0.9);
  cost.denied_median = Median(denied);
  cost.denied_p90 = Percentile(denied, 0.9);
  cost.established_median = Median(established);
  return cost;
}

// Veths for the node's endpoints in the timing namespace; apply, replace, remove (in ms).
struct ApplyTimesMs {
  double apply = -1, replace = -1, remove = -1;
  std::string error;
};
ApplyTimesMs MeasureApply(const ir::CompiledPolicy& ir, const ir::CompiledPolicy& other) {
  std::unique_ptr<backends::Backend> backend = backends::MakeEbpfBackend();
  ApplyTimes t = TimeApplyReplaceRemove(
      *backend, ir, &other, "npebpfbench",
      [&](const std::string& netns, backends::Attachment* where) -> absl::Status {
        std::string batch;
        for (int i = 0; i < ir.endpoints_size(); ++i) {
          absl::StrAppend(&batch, "link add h", i, " type veth peer name c", i, "\n",
                          "link set h", i, " up\n");
          where->interfaces.push_back({absl::StrCat(ir.endpoints(i).namespace_(), "/",
                                                    ir.endpoints(i).name()),
                                       absl::StrCat("h", i)});
        }
        return backends::RunCommand({"ip", "-n", netns, "-batch", "-"}, batch).status();
      });
  auto ms = [](double s) { return s < 0 ? -1 : s * 1000; };
  if (!t.error.empty()) return ApplyTimesMs{-1, -1, -1, t.error};
  return ApplyTimesMs{ms(t.apply_s), ms(t.replace_s), ms(t.remove_s), ""};
}

void Run(const std::string& label, SyntheticOptions o, const std::string& node, bool root,
         bool apply, std::ofstream* flows_out) {
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<ir::CompiledPolicy> ir = Compile(o, node);
  double compile_ms = Ms(t0);
  if (!ir.ok()) {
    std::cout << "| " << label << " | error: " << ir.status() << " |\n";
    return;
  }
  absl::StatusOr<ir::CompiledPolicy> other = Compile(o, node, /*extra=*/o.namespaces);
  t0 = std::chrono::steady_clock::now();
  absl::StatusOr<MapContents> maps = ebpf::BuildMaps(*ir);
  double build_ms = Ms(t0);
  if (!maps.ok()) {
    std::cout << "| " << label << " | error: " << maps.status() << " |\n";
    return;
  }
  int rules = 0;
  for (const ir::Table& t : ir->tables()) rules += t.ingress().rules_size() + t.egress().rules_size();
  double load_ms = -1;
  PacketCost cost;
  ApplyTimesMs times;
  if (root) {
    std::vector<std::pair<uint32_t, uint32_t>> ifs;
    for (uint32_t i = 0; i < maps->endpoints.size(); ++i) ifs.emplace_back(1000 + i, i);
    std::vector<double> loads;
    for (int i = 0; i < 3; ++i) {
      t0 = std::chrono::steady_clock::now();
      absl::StatusOr<std::unique_ptr<ebpf::Generation>> g = ebpf::Generation::Load(*maps, ifs);
      loads.push_back(Ms(t0));
      if (!g.ok()) {
        std::cerr << label << ": " << g.status() << "\n";
        break;
      }
    }
    load_ms = Median(loads);
    std::vector<Flow> flows = MakeFlows(*ir, 400, o.seed);
    absl::StatusOr<PacketCost> c = MeasurePackets(*ir, *maps, flows, 20000);
    if (c.ok()) {
      cost = *c;
    } else {
      std::cerr << label << ": " << c.status() << "\n";
    }
    if (flows_out != nullptr) {
      *flows_out << "# " << label << ": " << o.policies << " policies, "
                 << o.namespaces * o.pods_per_namespace << " pods, node " << node << "\n";
      for (const Flow& f : flows) {
        *flows_out << f.src.ToString() << " " << f.dst.ToString() << " "
                   << (f.protocol == 6 ? "TCP" : "UDP") << " " << f.port << " "
                   << (f.allowed ? "allow" : "deny") << "\n";
      }
    }
    if (apply && other.ok()) times = MeasureApply(*ir, *other);
  }
  auto num = [](double v, int digits = 0) {
    return v < 0 ? std::string("-") : absl::StrFormat("%.*f", digits, v);
  };
  std::cout << "| " << o.policies << " | " << o.namespaces * o.pods_per_namespace << " | "
            << ir->endpoints_size() << " | " << ir->identities_size() << " | "
            << ir->tables_size() << " | " << rules << " | " << maps->ident_hosts.size() << " | "
            << maps->ident4.size() << " + "
            << maps->ident6.size() << " | " << maps->endpoints_addr.size() << " | "
            << maps->ports.size() << " | " << maps->members.size() << " | "
            << maps->TotalEntries() + maps->endpoints.size() << " | " << num(compile_ms) << " | "
            << num(build_ms, 1) << " | " << num(load_ms) << " | " << num(times.apply) << " | "
            << num(times.replace) << " | " << num(times.remove) << " | " << cost.flows << " ("
            << cost.allowed << " allowed, " << cost.mismatches << " wrong) | "
            << num(cost.allowed_median) << " / " << num(cost.allowed_p90) << " | "
            << num(cost.denied_median) << " / " << num(cost.denied_p90) << " | "
            << num(cost.established_median) << " | " << num(cost.arp) << " |";
  if (!times.error.empty()) std::cout << " apply error: " << times.error;
  std::cout << std::endl;
}

int Main(int argc, char** argv) {
  std::vector<int> policies;
  std::string flows_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--flows" && i + 1 < argc) {
      flows_path = argv[++i];
      continue;
    }
    int n;
    if (absl::SimpleAtoi(a, &n)) policies.push_back(n);
  }
  if (policies.empty()) policies = {100, 1000, 10000};
  const bool root = geteuid() == 0;
  if (!root) std::cerr << "not root: sizes only\n";
  std::ofstream flows_file;
  std::ofstream* flows_out = nullptr;
  if (!flows_path.empty()) {
    flows_file.open(flows_path);
    flows_out = &flows_file;
  }
  std::cout << "| policies | pods | node endpoints | identities | tables | IR rules | "
               "np_ident_hosts | np_ident4 + 6 | np_endpoints_addr | np_ports | np_members | all entries | "
               "compile ms | maps ms | load ms | apply ms | replace ms | remove ms | flows | "
               "SYN allowed ns median / p90 | SYN denied ns median / p90 | established ns | ARP ns |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (int p : policies) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = p;
    Run(absl::StrCat(p, " policies"), o, "node-0", root, true, flows_out);
  }
  // The whole 10k-pod cluster as one node (every pod an endpoint): maps and packets only.
  SyntheticOptions all = SizeForPods(10000);
  Run("whole cluster", all, "", root, false, flows_out);
  return 0;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) { return np::bench::Main(argc, argv); }
