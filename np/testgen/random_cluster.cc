#include "np/testgen/random_cluster.h"

#include "absl/strings/str_cat.h"

namespace np::testgen {
namespace {

const std::vector<std::string> kPodKeys = {"app", "tier", "v"};
const std::vector<std::vector<std::string>> kPodValues = {{"x", "y", "z"}, {"web", "db"}, {"1", "2"}};
const std::vector<std::string> kNsKeys = {"team", "env"};
const std::vector<std::vector<std::string>> kNsValues = {{"a", "b"}, {"prod", "dev"}};
const std::vector<std::string> kPortNames = {"http", "dns", "metrics"};
const std::vector<int> kPortNumbers = {53, 80, 81, 8080};
// Pods get 10.0.0.<i> and fd00::<i>; the blocks cover pods, parts of them and the outside.
const std::vector<std::string> kCidrs = {"10.0.0.0/24",  "10.0.0.0/29",   "10.0.0.4/30",
                                         "10.0.0.0/8",   "0.0.0.0/0",     "192.168.0.0/16",
                                         "fd00::/64",    "fd00::/125",    "::/0",
                                         "2001:db8::/32"};

}  // namespace

RandomCluster::RandomCluster(uint64_t seed, RandomClusterOptions options)
    : rng_(seed), options_(options) {}

std::vector<IpAddress> RandomCluster::ProbeAddresses() {
  std::vector<IpAddress> out;
  for (const char* text : {"10.0.0.3", "10.0.0.200", "10.1.2.3", "192.168.4.4", "203.0.113.9",
                           "fd00::5", "fd00::1:0", "2001:db8::7", "2001:db9::1"}) {
    out.push_back(*IpAddress::Parse(text));
  }
  return out;
}

std::vector<uint16_t> RandomCluster::ProbePorts() { return {1, 53, 80, 81, 82, 8080, 65535}; }

void RandomCluster::RandomLabels(google::protobuf::Map<std::string, std::string>* labels,
                                 bool for_pod) {
  const auto& keys = for_pod ? kPodKeys : kNsKeys;
  const auto& values = for_pod ? kPodValues : kNsValues;
  for (size_t k = 0; k < keys.size(); ++k) {
    if (Chance(0.6)) (*labels)[keys[k]] = Pick(values[k]);
  }
}

void RandomCluster::RandomSelector(k8s::LabelSelector* selector, bool for_pod) {
  const auto& keys = for_pod ? kPodKeys : kNsKeys;
  const auto& values = for_pod ? kPodValues : kNsValues;
  int labels = Uniform(0, 2) - (Chance(0.3) ? 1 : 0);
  for (int i = 0; i < labels; ++i) {
    int k = Uniform(0, static_cast<int>(keys.size()) - 1);
    (*selector->mutable_matchlabels())[keys[k]] = Pick(values[k]);
  }
  // Namespace selectors sometimes target a namespace by the name label.
  if (!for_pod && Chance(0.15) && !namespaces_.empty()) {
    (*selector->mutable_matchlabels())["kubernetes.io/metadata.name"] = Pick(namespaces_);
  }
  int expressions = Chance(0.5) ? Uniform(1, 2) : 0;
  for (int i = 0; i < expressions; ++i) {
    int k = Uniform(0, static_cast<int>(keys.size()) - 1);
    k8s::LabelSelectorRequirement* req = selector->add_matchexpressions();
    req->set_key(keys[k]);
    static const std::vector<std::string> kOps = {"In", "NotIn", "Exists", "DoesNotExist"};
    const std::string& op = Pick(kOps);
    req->set_operator_(op);
    if (op == "In" || op == "NotIn") {
      int n = Uniform(1, 2);
      for (int v = 0; v < n; ++v) req->add_values(Pick(values[k]));
    }
  }
}

void RandomCluster::RandomPeer(k8s::NetworkPolicyPeer* peer) {
  int kind = Uniform(0, 3);
  if (kind == 0 || kind == 2) RandomSelector(peer->mutable_podselector(), true);
  if (kind == 1 || kind == 2) RandomSelector(peer->mutable_namespaceselector(), false);
  if (kind == 3) {
    const std::string& cidr = Pick(kCidrs);
    peer->mutable_ipblock()->set_cidr(cidr);
    absl::StatusOr<IpPrefix> block = IpPrefix::Parse(cidr);
    // Excepts strictly inside the block, from the same list or a single pod's address.
    int excepts = Chance(0.5) ? Uniform(1, 2) : 0;
    for (int i = 0; i < excepts; ++i) {
      std::string candidate = Chance(0.5) ? Pick(kCidrs)
                              : block->family() == AddressFamily::kIPv4
                                  ? absl::StrCat("10.0.0.", Uniform(0, 9), "/32")
                                  : absl::StrCat("fd00::", Uniform(0, 9), "/128");
      absl::StatusOr<IpPrefix> e = IpPrefix::Parse(candidate);
      if (e.ok() && block->Contains(*e) && e->length() > block->length()) {
        // Sometimes written IPv4-mapped ("::ffff:10.0.0.4/126"), which means the IPv4 prefix
        // (np/types.h); its written length (+96) keeps it a valid strict subset.
        if (e->family() == AddressFamily::kIPv4 && Chance(0.15)) {
          candidate = absl::StrCat("::ffff:", e->network().ToString(), "/", e->length() + 96);
        }
        peer->mutable_ipblock()->add_except(candidate);
      }
    }
  }
}

void RandomCluster::RandomPort(k8s::NetworkPolicyPort* port) {
  static const std::vector<std::string> kProtocols = {"TCP", "UDP", "SCTP"};
  if (Chance(0.6)) port->set_protocol(Pick(kProtocols));
  int kind = Uniform(0, 3);
  if (kind == 0) return;  // all ports of the protocol
  if (kind == 1 || kind == 2) {
    port->mutable_port()->set_type(0);
    int first = Pick(kPortNumbers);
    port->mutable_port()->set_intval(first);
    if (kind == 2) port->set_endport(first + Uniform(0, 30));
    return;
  }
  port->mutable_port()->set_type(1);
  port->mutable_port()->set_strval(Pick(kPortNames));
}

k8s::Namespace RandomCluster::RandomNamespace(const std::string& name) {
  k8s::Namespace ns;
  ns.mutable_metadata()->set_name(name);
  RandomLabels(ns.mutable_metadata()->mutable_labels(), false);
  return ns;
}

k8s::Pod RandomCluster::RandomPod(const std::string& namespace_name, const std::string& name,
                                  int index) {
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_(namespace_name);
  pod.mutable_metadata()->set_name(name);
  RandomLabels(pod.mutable_metadata()->mutable_labels(), true);
  pod.mutable_spec()->set_nodename(Chance(0.5) ? "node-1" : "node-2");
  int stack = Uniform(0, 9);  // mostly dual-stack; some single-stack; one in ten has no IP
  if (stack <= 6 || stack == 7) {
    // Sometimes written IPv4-mapped, which denotes the same IPv4 address.
    pod.mutable_status()->add_podips()->set_ip(
        absl::StrCat(Chance(0.1) ? "::ffff:" : "", "10.0.0.", index));
  }
  if (stack <= 6 || stack == 8) {
    pod.mutable_status()->add_podips()->set_ip(absl::StrCat("fd00::", index));
  }
  k8s::Container* c = pod.mutable_spec()->add_containers();
  c->set_name("main");
  std::vector<std::string> names = kPortNames;
  std::shuffle(names.begin(), names.end(), rng_);
  int named = Uniform(0, 2);
  for (int i = 0; i < named; ++i) {
    k8s::ContainerPort* port = c->add_ports();
    port->set_name(names[i]);
    static const std::vector<std::string> kProtocols = {"TCP", "UDP", "SCTP", ""};
    const std::string& protocol = Pick(kProtocols);
    if (!protocol.empty()) port->set_protocol(protocol);
    port->set_containerport(Pick(kPortNumbers));
  }
  return pod;
}

int RandomCluster::AddressIndex(int pod_number) {
  // Now and then a pod takes an earlier pod's address: two live pods holding one IP, which
  // np quarantines (README, "Shared addresses").
  if (pod_number > 0 && Chance(options_.shared_address_chance)) return Uniform(0, pod_number - 1) % 250;
  return pod_number % 250;
}

k8s::NetworkPolicy RandomCluster::RandomPolicy(const std::string& namespace_name,
                                               const std::string& name) {
  k8s::NetworkPolicy policy;
  policy.mutable_metadata()->set_namespace_(namespace_name);
  policy.mutable_metadata()->set_name(name);
  k8s::NetworkPolicySpec* spec = policy.mutable_spec();
  RandomSelector(spec->mutable_podselector(), true);
  int types = Uniform(0, 3);  // absent, Ingress, Egress, both
  if (types == 1 || types == 3) spec->add_policytypes("Ingress");
  if (types == 2 || types == 3) spec->add_policytypes("Egress");
  auto fill_rule = [&](auto* peers, auto* ports) {
    int peer_mode = Uniform(0, 4);  // 0: absent (all peers); 1..4 peers
    for (int i = 0; i < peer_mode - 1; ++i) RandomPeer(peers->Add());
    if (peer_mode == 1 && Chance(0.5)) RandomPeer(peers->Add());
    int port_count = Chance(0.35) ? 0 : Uniform(1, 3);
    for (int i = 0; i < port_count; ++i) RandomPort(ports->Add());
  };
  int ingress = Uniform(0, 2) - (Chance(0.2) ? 1 : 0);
  for (int i = 0; i < ingress; ++i) {
    k8s::NetworkPolicyIngressRule* rule = spec->add_ingress();
    fill_rule(rule->mutable_from(), rule->mutable_ports());
  }
  int egress = Uniform(0, 2) - (Chance(0.3) ? 1 : 0);
  for (int i = 0; i < egress; ++i) {
    k8s::NetworkPolicyEgressRule* rule = spec->add_egress();
    fill_rule(rule->mutable_to(), rule->mutable_ports());
  }
  return policy;
}

ClusterObjects RandomCluster::Objects() {
  ClusterObjects objects;
  int namespace_count = Uniform(1, options_.max_namespaces);
  for (int i = 0; i < namespace_count; ++i) namespaces_.push_back(absl::StrCat("ns", i));
  for (const std::string& name : namespaces_) {
    // Some namespaces exist only because pods or policies name them (implied).
    if (Chance(0.85)) objects.namespaces.push_back({RandomNamespace(name), {}});
  }
  int pod_count = Uniform(1, options_.max_pods);
  for (int i = 0; i < pod_count; ++i) {
    int name = next_pod_++;
    objects.pods.push_back({RandomPod(Pick(namespaces_), absl::StrCat("p", name),
                                      AddressIndex(name)), {}});
  }
  int policy_count = Uniform(0, options_.max_policies);
  for (int i = 0; i < policy_count; ++i) {
    objects.policies.push_back(
        {RandomPolicy(Pick(namespaces_), absl::StrCat("np", next_policy_++)), {}});
  }
  return objects;
}

Change RandomCluster::RandomChange(const Cluster& current) {
  if (namespaces_.empty()) namespaces_.push_back("ns0");
  int kind = Uniform(0, 8);
  if (kind <= 1 || current.pod_count() == 0) {  // add a pod
    int name = next_pod_++;
    return Change{Change::Op::kUpsert,
                  RandomPod(Pick(namespaces_), absl::StrCat("p", name), AddressIndex(name))};
  }
  if (kind == 2) {  // relabel (or re-address) an existing pod
    const PodInfo& info = current.pod(Uniform(0, current.pod_count() - 1));
    k8s::Pod pod = current.pod_object(*current.FindPod(info.Key()));
    pod.mutable_metadata()->mutable_labels()->clear();
    RandomLabels(pod.mutable_metadata()->mutable_labels(), true);
    return Change{Change::Op::kUpsert, pod};
  }
  if (kind == 3) {  // delete a pod
    const PodInfo& info = current.pod(Uniform(0, current.pod_count() - 1));
    k8s::Pod pod;
    pod.mutable_metadata()->set_namespace_(info.namespace_name);
    pod.mutable_metadata()->set_name(info.name);
    return Change{Change::Op::kDelete, pod};
  }
  if (kind == 4) {  // relabel or create a namespace
    return Change{Change::Op::kUpsert, RandomNamespace(Pick(namespaces_))};
  }
  if (kind <= 6 || current.policy_count() == 0) {  // add a policy
    return Change{Change::Op::kUpsert,
                  RandomPolicy(Pick(namespaces_), absl::StrCat("np", next_policy_++))};
  }
  const k8s::NetworkPolicy& existing = current.policy(Uniform(0, current.policy_count() - 1));
  if (kind == 7) {  // change a policy in place
    return Change{Change::Op::kUpsert,
                  RandomPolicy(existing.metadata().namespace_(), existing.metadata().name())};
  }
  k8s::NetworkPolicy gone;
  *gone.mutable_metadata() = existing.metadata();
  return Change{Change::Op::kDelete, gone};
}

}  // namespace np::testgen
