// Per-packet cost of the nft backend's program on the flows the eBPF benchmark timed
// (issue 5 item 4: "the per-packet lookup cost ... against nft on the same flows").
//
// nft has no BPF_PROG_TEST_RUN. So, in a network namespace of its own, this program puts the
// node's ruleset on the *output* hook (the same chains; only the base chain's hook differs from
// the forward hook it runs on in a node) and sends each flow's first packet (a TCP SYN, or a
// UDP datagram) from a raw socket with the flow's own source address, `repeat` times; the
// packets leave through a veth whose peer is down, so nothing after the hook costs more than a
// drop. The same is timed with an empty output chain that accepts (the floor of an allowed
// packet: socket, routing, hook entry, the veth), one that drops (the floor of a denied one),
// and a chain holding only `ct state established,related accept` (conntrack's share: the
// program tracks connections, as the eBPF program does with its own table). The figure per
// flow is program minus the floor of its verdict, median of three rounds; each packet's fate
// (sent, or EPERM) is checked against the verdict in the flows file.
//
//   sudo bazel-out/k8-opt/bin/bench/backend_ebpf/backend_ebpf_bench --flows /tmp/flows.txt
//   sudo bazel-out/k8-opt/bin/bench/backend_nft_packet_bench /tmp/flows.txt [repeat]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bench/cluster_generator.h"
#include "np/backends/nft/nft.h"
#include "np/backends/util.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::bench {
namespace {

struct Flow {
  IpAddress src, dst;
  uint8_t protocol = 6;
  uint16_t port = 0;
  bool allowed = false;
};

struct Section {
  std::string label;
  int policies = 0;
  int pods = 0;
  std::string node;
  std::vector<Flow> flows;
};

// "# 100 policies: 100 policies, 10000 pods, node node-0" then "src dst TCP 80 allow" lines.
std::vector<Section> ReadFlows(const std::string& path) {
  std::vector<Section> sections;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      Section s;
      size_t colon = line.find(':');
      s.label = line.substr(2, colon - 2);
      std::vector<std::string> parts = absl::StrSplit(line.substr(colon + 1), ',');
      for (std::string& p : parts) {
        std::vector<std::string> w = absl::StrSplit(p, ' ', absl::SkipWhitespace());
        if (w.size() >= 2 && w[1] == "policies") (void)absl::SimpleAtoi(w[0], &s.policies);
        if (w.size() >= 2 && w[1] == "pods") (void)absl::SimpleAtoi(w[0], &s.pods);
        if (!w.empty() && w[0] == "node") s.node = w.size() > 1 ? w[1] : "";
      }
      sections.push_back(s);
      continue;
    }
    std::vector<std::string> w = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (w.size() != 5 || sections.empty()) continue;
    absl::StatusOr<IpAddress> src = IpAddress::Parse(w[0]);
    absl::StatusOr<IpAddress> dst = IpAddress::Parse(w[1]);
    int port;
    if (!src.ok() || !dst.ok() || !src->is_v4() || !absl::SimpleAtoi(w[3], &port)) continue;
    Flow f;
    f.src = *src;
    f.dst = *dst;
    f.protocol = w[2] == "UDP" ? 17 : 6;
    f.port = static_cast<uint16_t>(port);
    f.allowed = w[4] == "allow";
    sections.back().flows.push_back(f);
  }
  return sections;
}

std::string Packet(const Flow& f, uint16_t sport) {
  std::string p(f.protocol == 6 ? 40 : 36, '\0');
  auto* ip = reinterpret_cast<iphdr*>(p.data());
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = f.protocol;
  ip->tot_len = htons(static_cast<uint16_t>(p.size()));
  ip->saddr = htonl(f.src.v4());
  ip->daddr = htonl(f.dst.v4());
  uint8_t* l4 = reinterpret_cast<uint8_t*>(p.data()) + 20;
  l4[0] = static_cast<uint8_t>(sport >> 8);
  l4[1] = static_cast<uint8_t>(sport);
  l4[2] = static_cast<uint8_t>(f.port >> 8);
  l4[3] = static_cast<uint8_t>(f.port);
  if (f.protocol == 6) {
    l4[12] = 5 << 4;   // data offset
    l4[13] = 0x02;     // SYN
    l4[14] = 0xff;     // window
  } else {
    l4[5] = 16;        // UDP length
  }
  return p;
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// ns per packet for `repeat` sends of the flow; *sent: whether the packets got through.
double Time(int fd, const Flow& f, uint16_t sport, int repeat, bool* sent) {
  std::string p = Packet(f, sport);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(f.dst.v4());
  int ok = 0;
  int64_t t0 = NowNs();
  for (int i = 0; i < repeat; ++i) {
    if (sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) > 0) ++ok;
  }
  int64_t t1 = NowNs();
  *sent = ok == repeat;
  return static_cast<double>(t1 - t0) / repeat;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

bool Run(const std::vector<std::string>& argv, const std::string& input = "") {
  absl::StatusOr<std::string> out = backends::RunCommand(argv, input);
  if (!out.ok()) std::cerr << out.status() << "\n";
  return out.ok();
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: backend_nft_packet_bench FLOWS_FILE [repeat]\n";
    return 2;
  }
  int repeat = 2000;
  if (argc > 2) (void)absl::SimpleAtoi(argv[2], &repeat);
  if (geteuid() != 0) {
    std::cerr << "needs root (a network namespace of its own, raw sockets)\n";
    return 2;
  }
  std::vector<Section> sections = ReadFlows(argv[1]);
  if (sections.empty()) {
    std::cerr << "no flows in " << argv[1] << "\n";
    return 2;
  }
  // A namespace of our own: everything below (ip, nft, the socket) happens inside it.
  if (unshare(CLONE_NEWNET) != 0) {
    std::cerr << "unshare(CLONE_NEWNET): " << std::strerror(errno) << "\n";
    return 2;
  }
  if (!Run({"ip", "-b", "-"},
           "link set lo up\n"
           "link add v0 address 02:00:00:00:09:02 type veth peer name v1\n"
           "link set v0 up\n"
           "route add default via 169.254.9.1 dev v0 onlink\n"
           "neigh add 169.254.9.1 lladdr 02:00:00:00:09:01 dev v0 nud permanent\n")) {
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    std::cerr << "raw socket: " << std::strerror(errno) << "\n";
    return 2;
  }
  const std::string floor_program =
      "table inet np {}\ndelete table inet np\ntable inet np {\n  chain output {\n"
      "    type filter hook output priority filter; policy accept;\n  }\n}\n";
  const std::string drop_program =
      "table inet np {}\ndelete table inet np\ntable inet np {\n  chain output {\n"
      "    type filter hook output priority filter; policy drop;\n  }\n}\n";
  const std::string ct_program =
      "table inet np {}\ndelete table inet np\ntable inet np {\n  chain output {\n"
      "    type filter hook output priority filter; policy accept;\n"
      "    ct state established,related accept\n  }\n}\n";

  std::cout << "| flows of | policies | compiled for | nft rules | elements | flows (allowed) | "
               "wrong verdicts | floor ns | conntrack ns | SYN allowed ns median (p90) | "
               "SYN denied ns median (p90) |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  uint16_t sport_base = 20000;
  for (const Section& s : sections) {
    SyntheticOptions o = SizeForPods(s.pods);
    o.policies = s.policies;
    absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(o));
    if (!cluster.ok()) return 2;
    EngineOptions eo;
    eo.node_name = s.node;
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, eo);
    if (!engine.ok()) return 2;
    absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine);
    if (!ir.ok()) return 2;
    absl::StatusOr<backends::nft::Program> program = backends::nft::Build(*ir);
    if (!program.ok()) {
      std::cerr << program.status() << "\n";
      return 2;
    }
    for (backends::nft::Chain& c : program->chains) {
      if (c.name == "forward") {
        c.name = "output";
        c.hook = "type filter hook output priority filter; policy accept;";
      }
    }
    const std::string text = backends::nft::Text(*program);
    const size_t n = s.flows.size();
    // [program][round][flow]: the node's program, the accept floor, the drop floor (what a
    // dropped packet costs with an empty chain: it skips the rest of the output path), and
    // conntrack alone.
    const std::string* programs[4] = {&text, &floor_program, &drop_program, &ct_program};
    std::vector<std::vector<std::vector<double>>> t(
        4, std::vector<std::vector<double>>(3, std::vector<double>(n)));
    int wrong = 0;
    for (int round = 0; round < 3; ++round) {
      const uint16_t sport = static_cast<uint16_t>(sport_base + round);
      for (int which = 0; which < 4; ++which) {
        if (!Run({"nft", "-f", "-"}, *programs[which])) return 2;
        for (size_t i = 0; i < n; ++i) {
          bool sent = false;
          t[which][round][i] = Time(fd, s.flows[i], sport, repeat, &sent);
          if (which == 0 && round == 0 && sent != s.flows[i].allowed) ++wrong;
        }
      }
    }
    const auto& with = t[0];
    const auto& floor = t[1];
    const auto& drop_floor = t[2];
    const auto& ct = t[3];
    sport_base = static_cast<uint16_t>(sport_base + 3);
    std::vector<double> allowed, denied, floors, cts;
    for (size_t i = 0; i < n; ++i) {
      std::vector<double> d, f, c;
      for (int r = 0; r < 3; ++r) {
        d.push_back(with[r][i] - (s.flows[i].allowed ? floor : drop_floor)[r][i]);
        f.push_back(floor[r][i]);
        c.push_back(ct[r][i] - floor[r][i]);
      }
      (s.flows[i].allowed ? allowed : denied).push_back(Percentile(d, 0.5));
      floors.push_back(Percentile(f, 0.5));
      cts.push_back(Percentile(c, 0.5));
    }
    auto ns = [](double v) { return v < 0 ? std::string("-") : absl::StrCat(static_cast<int64_t>(v + 0.5)); };
    std::cout << "| " << s.label << " | " << s.policies << " | " << (s.node.empty() ? "cluster" : s.node)
              << " | " << program->rule_count() << " | " << program->element_count() << " | " << n
              << " (" << allowed.size() << ") | " << wrong << " | " << ns(Percentile(floors, 0.5))
              << " | " << ns(Percentile(cts, 0.5)) << " | " << ns(Percentile(allowed, 0.5)) << " ("
              << ns(Percentile(allowed, 0.9)) << ") | " << ns(Percentile(denied, 0.5)) << " ("
              << ns(Percentile(denied, 0.9)) << ") |\n";
    std::cout.flush();
  }
  Run({"nft", "-f", "-"}, "table inet np {}\ndelete table inet np\n");
  return 0;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) { return np::bench::Main(argc, argv); }
