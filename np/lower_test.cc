// The IR against the engine: a literal interpreter of proto/compiled.proto (the simplest
// possible "backend") answers every packet of random clusters as the engine does.
#include "np/lower.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

std::string Bytes(const IpAddress& a) {
  uint8_t b[16];
  a.ToBytes(b);
  return std::string(reinterpret_cast<char*>(b), a.is_v4() ? 4 : 16);
}

// What the IR says about a packet, read literally.
class IrInterpreter {
 public:
  explicit IrInterpreter(const ir::CompiledPolicy& ir) : ir_(ir) {}

  uint32_t IdentityOf(const IpAddress& a) const {
    const auto& ranges = a.is_v4() ? ir_.ipv4() : ir_.ipv6();
    std::string key = Bytes(a);
    for (const ir::AddressRange& r : ranges) {
      if (r.first() <= key && key <= r.last()) return r.identity();
    }
    ADD_FAILURE() << "no range holds " << a.ToString();
    return 0;
  }

  const ir::Endpoint* EndpointOf(const IpAddress& a) const {
    for (const ir::Endpoint& e : ir_.endpoints()) {
      for (const std::string& ip : e.ips()) {
        if (*IpAddress::Parse(ip) == a) return &e;
      }
    }
    return nullptr;
  }

  bool DirectionAllows(const ir::DirectionPolicy& d, Protocol protocol, uint16_t port,
                       uint32_t peer) const {
    if (!d.isolated()) return true;
    for (const ir::PortRule& rule : d.rules()) {
      if (static_cast<int>(rule.protocol()) != static_cast<int>(protocol)) continue;
      if (port < rule.first_port() || port > rule.last_port()) continue;
      const ir::PeerSet& set = ir_.peer_sets(rule.peer_set());
      if (set.all()) return true;
      if (std::binary_search(set.identities().begin(), set.identities().end(), peer)) return true;
    }
    return false;
  }

  bool Allowed(const IpAddress& src, const IpAddress& dst, Protocol protocol,
               uint16_t port) const {
    const ir::Endpoint* s = EndpointOf(src);
    const ir::Endpoint* d = EndpointOf(dst);
    if (s != nullptr && s == d && ir_.always_allow_self()) return true;
    if (s != nullptr && s->selected() &&
        !DirectionAllows(ir_.tables(s->table()).egress(), protocol, port, IdentityOf(dst))) {
      return false;
    }
    if (d != nullptr && d->selected() &&
        !DirectionAllows(ir_.tables(d->table()).ingress(), protocol, port, IdentityOf(src))) {
      return false;
    }
    return true;
  }

 private:
  const ir::CompiledPolicy& ir_;
};

void CheckRangesPartitionTheSpace(const ir::CompiledPolicy& ir) {
  for (int f = 0; f < 2; ++f) {
    const auto& ranges = f == 0 ? ir.ipv4() : ir.ipv6();
    size_t n = f == 0 ? 4 : 16;
    ASSERT_GT(ranges.size(), 0);
    EXPECT_EQ(ranges[0].first(), std::string(n, '\0'));
    EXPECT_EQ(ranges[ranges.size() - 1].last(), std::string(n, '\xff'));
    for (int i = 0; i < ranges.size(); ++i) {
      EXPECT_LE(ranges[i].first(), ranges[i].last());
      ASSERT_LT(ranges[i].identity(), static_cast<uint32_t>(ir.identities_size()));
      EXPECT_FALSE(ranges[i].cidrs().empty());
      if (i > 0) {
        // Disjoint and contiguous: last + 1 == next first.
        std::string next = ranges[i - 1].last();
        for (int b = static_cast<int>(n) - 1; b >= 0; --b) {
          if (static_cast<uint8_t>(next[b]) == 0xff) {
            next[b] = 0;
          } else {
            next[b] = static_cast<char>(static_cast<uint8_t>(next[b]) + 1);
            break;
          }
        }
        EXPECT_EQ(next, ranges[i].first()) << "gap or overlap before range " << i;
      }
    }
  }
}

TEST(LowerToIr, CidrDecomposition) {
  ClusterObjects objects;
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_("x");
  p.mutable_metadata()->set_name("p");
  p.mutable_spec()->mutable_podselector();
  auto* block = p.mutable_spec()->add_ingress()->add_from()->mutable_ipblock();
  block->set_cidr("10.0.0.0/8");
  block->add_except("10.0.0.0/24");
  objects.policies.push_back({p, {}});
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_("x");
  pod.mutable_metadata()->set_name("a");
  pod.mutable_status()->add_podips()->set_ip("10.1.0.5");
  objects.pods.push_back({pod, {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  ASSERT_TRUE(cluster.ok());
  absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**Engine::Build(*cluster));
  ASSERT_TRUE(ir.ok());
  CheckRangesPartitionTheSpace(*ir);
  // Outside the block and its except alike: [0.0.0.0, 10.0.0.255] is one identity (no
  // ipBlock holds it) = 0/5 + 8/7 + 10.0.0.0/24; then the block up to the pod, the pod.
  ASSERT_GE(ir->ipv4_size(), 4);
  EXPECT_EQ(std::vector<std::string>(ir->ipv4(0).cidrs().begin(), ir->ipv4(0).cidrs().end()),
            (std::vector<std::string>{"0.0.0.0/5", "8.0.0.0/7", "10.0.0.0/24"}));
  EXPECT_EQ(ir->ipv4(1).cidrs(0), "10.0.1.0/24");
  EXPECT_EQ(ir->ipv4(2).cidrs(0), "10.1.0.5/32");
  EXPECT_EQ(ir->ipv4(2).pod(), "x/a");
  EXPECT_EQ(ir->ipv4(3).cidrs(0), "10.1.0.6/31");
  // The block's two sides of the pod share an identity; the outside has another.
  EXPECT_EQ(ir->ipv4(1).identity(), ir->ipv4(3).identity());
  EXPECT_NE(ir->ipv4(0).identity(), ir->ipv4(1).identity());
  ASSERT_EQ(ir->endpoints_size(), 1);
  EXPECT_TRUE(ir->endpoints(0).selected());
  const ir::Table& t = ir->tables(ir->endpoints(0).table());
  EXPECT_TRUE(t.ingress().isolated());
  EXPECT_FALSE(t.egress().isolated());
  EXPECT_EQ(ir->ipv6_size(), 1);  // one range: the whole IPv6 space
  EXPECT_EQ(ir->ipv6(0).cidrs(0), "::/0");
}

TEST(LowerToIr, InterpreterEqualsEngineOnRandomClusters) {
  for (uint64_t seed = 0; seed < 1500; ++seed) {
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok());
    EngineOptions options;
    if (seed % 2 == 0) options.node_name = "node-1";
    if (seed % 7 == 3) {
      options.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
    }
    if (seed % 5 == 2) options.evaluation.always_allow_self = true;
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
    ASSERT_TRUE(engine.ok());
    absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine);
    ASSERT_TRUE(ir.ok());
    CheckRangesPartitionTheSpace(*ir);
    IrInterpreter interpreter(*ir);
    std::vector<IpAddress> addresses = testgen::RandomCluster::ProbeAddresses();
    for (int i = 0; i < cluster->pod_count(); ++i) {
      for (const IpAddress& a : cluster->pod(i).ips) addresses.push_back(a);
    }
    for (const IpAddress& s : addresses) {
      for (const IpAddress& d : addresses) {
        if (s.family() != d.family()) continue;
        for (Protocol protocol : kAllProtocols) {
          for (uint16_t port : testgen::RandomCluster::ProbePorts()) {
            bool expected = (*engine)->AllowedPacket(s, d, protocol, port);
            bool got = interpreter.Allowed(s, d, protocol, port);
            ASSERT_EQ(got, expected)
                << "seed " << seed << ": " << s.ToString() << " -> " << d.ToString() << " "
                << ProtocolName(protocol) << "/" << port << "\n"
                << ir->DebugString();
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace np
