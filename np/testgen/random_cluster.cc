#include "np/testgen/random_cluster.h"

#include <algorithm>

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
// Tier policies: priorities from a short list so that ties within a tier are frequent (np
// orders them by name, then kind: np/tiers/model.h); Nodes labelled and addressed so that
// `nodes` peers hit probe addresses (RandomCluster::ProbeAddresses) and miss pods.
const std::vector<int> kTierPriorities = {0, 3, 3, 10, 50, 1000};
const std::vector<std::string> kNodeKeys = {"zone", "role"};
const std::vector<std::vector<std::string>> kNodeValues = {{"a", "b"}, {"worker", "infra"}};
const std::vector<std::string> kNodeAddresses = {"10.1.2.3", "192.168.4.4", "203.0.113.9",
                                                 "fd00::1:0", "2001:db8::7"};
const std::vector<std::string> kDomainNames = {"example.com", "*.example.org"};

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

// ------------------------------------------------------------------ policy tiers

namespace api = ::np::policy_networking;

void RandomCluster::RandomSubject(api::Subject* subject) {
  if (Chance(0.5)) {
    RandomSelector(subject->mutable_namespaces(), false);
    return;
  }
  RandomSelector(subject->mutable_pods()->mutable_namespaceselector(), false);
  RandomSelector(subject->mutable_pods()->mutable_podselector(), true);
}

bool RandomCluster::RandomTierPeer(api::Peer* peer, bool egress) {
  // Ingress peers are namespaces and pods in both versions; egress adds nodes, networks
  // and (rarely: never decidable offline) domainNames.
  int kind = egress ? Uniform(0, 4) : Uniform(0, 1);
  if (kind == 4 && Chance(0.7)) kind = 3;
  switch (kind) {
    case 0:
      RandomSelector(peer->mutable_namespaces(), false);
      return false;
    case 1:
      RandomSelector(peer->mutable_pods()->mutable_namespaceselector(), false);
      RandomSelector(peer->mutable_pods()->mutable_podselector(), true);
      return false;
    case 2:
      RandomSelector(peer->mutable_nodes(), false);
      // Node labels have their own keys: rewrite the selector's keys onto them half the time.
      if (Chance(0.5)) {
        peer->mutable_nodes()->Clear();
        int k = Uniform(0, static_cast<int>(kNodeKeys.size()) - 1);
        (*peer->mutable_nodes()->mutable_matchlabels())[kNodeKeys[k]] = Pick(kNodeValues[k]);
      }
      return true;
    case 3: {
      int count = Uniform(1, 2);
      for (int i = 0; i < count; ++i) {
        const std::string& cidr = Pick(kCidrs);
        // x-kubernetes-list-type: set (no duplicates).
        if (std::find(peer->networks().begin(), peer->networks().end(), cidr) ==
            peer->networks().end()) {
          peer->add_networks(cidr);
        }
      }
      return true;
    }
    default:
      peer->add_domainnames(Pick(kDomainNames));
      return true;
  }
}

void RandomCluster::RandomV1Alpha1Port(api::AdminNetworkPolicyPort* port, bool named_allowed) {
  static const std::vector<std::string> kProtocols = {"TCP", "UDP", "SCTP", ""};
  int kind = Uniform(0, named_allowed ? 2 : 1);
  if (kind == 0) {
    const std::string& protocol = Pick(kProtocols);
    if (!protocol.empty()) port->mutable_portnumber()->set_protocol(protocol);
    port->mutable_portnumber()->set_port(Pick(kPortNumbers));
  } else if (kind == 1) {
    const std::string& protocol = Pick(kProtocols);
    if (!protocol.empty()) port->mutable_portrange()->set_protocol(protocol);
    int start = Pick(kPortNumbers);
    port->mutable_portrange()->set_start(start);
    port->mutable_portrange()->set_end(start + Uniform(1, 30));
  } else {
    port->set_namedport(Pick(kPortNames));
  }
}

void RandomCluster::RandomV1Alpha2Protocol(api::ClusterNetworkPolicyProtocol* protocol,
                                           bool named_allowed) {
  int kind = Uniform(0, named_allowed ? 3 : 2);
  if (kind == 3) {
    protocol->set_destinationnamedport(Pick(kPortNames));
    return;
  }
  api::ClusterNetworkPolicyProtocolPorts* ports =
      kind == 0 ? protocol->mutable_tcp() : kind == 1 ? protocol->mutable_udp()
                                                      : protocol->mutable_sctp();
  int first = Pick(kPortNumbers);
  if (Chance(0.6)) {
    ports->mutable_destinationport()->set_number(first);
  } else {
    ports->mutable_destinationport()->mutable_range()->set_start(first);
    ports->mutable_destinationport()->mutable_range()->set_end(first + Uniform(1, 30));
  }
}

void RandomCluster::AddTierPort(api::AdminNetworkPolicyRule* rule, bool named_allowed) {
  RandomV1Alpha1Port(rule->add_ports(), named_allowed);
}

void RandomCluster::AddTierPort(api::ClusterNetworkPolicyRule* rule, bool named_allowed) {
  RandomV1Alpha2Protocol(rule->add_protocols(), named_allowed);
}

template <typename Rule>
void RandomCluster::FillTierRule(Rule* rule, bool egress, const std::vector<std::string>& actions) {
  if (Chance(0.5)) rule->set_name(absl::StrCat("rule-", Uniform(0, 9)));
  rule->set_action(Pick(actions));
  int peers = Uniform(1, 3);
  bool no_named_ports = false;
  for (int i = 0; i < peers; ++i) no_named_ports |= RandomTierPeer(rule->add_peers(), egress);
  // "networks/nodes/domainNames peer cannot be set with namedPorts" (egress CEL rule).
  bool named_allowed = !(egress && no_named_ports);
  int ports = Chance(0.35) ? 0 : Uniform(1, 3);
  for (int i = 0; i < ports; ++i) AddTierPort(rule, named_allowed);
}

template <typename Spec>
void RandomCluster::FillTierSpec(Spec* spec, const std::vector<std::string>& actions) {
  RandomSubject(spec->mutable_subject());
  for (int i = Uniform(0, 3); i > 0; --i) FillTierRule(spec->add_ingress(), false, actions);
  for (int i = Uniform(0, 3); i > 0; --i) FillTierRule(spec->add_egress(), true, actions);
}

api::AdminNetworkPolicy RandomCluster::RandomAdminNetworkPolicy(const std::string& name) {
  api::AdminNetworkPolicy policy;
  policy.mutable_metadata()->set_name(name);
  policy.mutable_spec()->set_priority(Pick(kTierPriorities));
  FillTierSpec(policy.mutable_spec(), {"Allow", "Deny", "Pass"});
  return policy;
}

api::BaselineAdminNetworkPolicy RandomCluster::RandomBaselineAdminNetworkPolicy() {
  api::BaselineAdminNetworkPolicy policy;
  policy.mutable_metadata()->set_name("default");  // the only name the CRD accepts
  FillTierSpec(policy.mutable_spec(), {"Allow", "Deny"});
  return policy;
}

api::ClusterNetworkPolicy RandomCluster::RandomClusterNetworkPolicy(const std::string& name) {
  api::ClusterNetworkPolicy policy;
  policy.mutable_metadata()->set_name(name);
  policy.mutable_spec()->set_tier(Chance(0.6) ? "Admin" : "Baseline");
  policy.mutable_spec()->set_priority(Pick(kTierPriorities));
  FillTierSpec(policy.mutable_spec(), {"Accept", "Deny", "Pass"});
  return policy;
}

k8s::Node RandomCluster::RandomNode(const std::string& name) {
  k8s::Node node;
  node.mutable_metadata()->set_name(name);
  for (size_t k = 0; k < kNodeKeys.size(); ++k) {
    if (Chance(0.7)) (*node.mutable_metadata()->mutable_labels())[kNodeKeys[k]] = Pick(kNodeValues[k]);
  }
  static const std::vector<std::string> kTypes = {"InternalIP", "ExternalIP"};
  for (int i = Uniform(0, 2); i > 0; --i) {
    k8s::NodeAddress* address = node.mutable_status()->add_addresses();
    address->set_type(Pick(kTypes));
    address->set_address(Pick(kNodeAddresses));
  }
  if (Chance(0.3)) {  // a name, never an address a flow can have
    k8s::NodeAddress* address = node.mutable_status()->add_addresses();
    address->set_type("Hostname");
    address->set_address(name);
  }
  return node;
}

void RandomCluster::AddTiers(ClusterObjects& objects) {
  // The nodes pods run on (RandomPod), and sometimes one without pods.
  for (const char* name : {"node-1", "node-2", "node-3"}) {
    if (Chance(0.8)) objects.nodes.push_back({RandomNode(name), {}});
  }
  bool baseline_taken = false;
  std::vector<std::string> admin_names, cluster_names;
  auto fresh = [&](const std::vector<std::string>& taken, const std::vector<std::string>& other) {
    // Now and then the other kind's name: a same-priority tie between an AdminNetworkPolicy
    // and a ClusterNetworkPolicy of one name is ordered by kind (np/tiers/model.h).
    for (const std::string& name : other) {
      if (std::find(taken.begin(), taken.end(), name) == taken.end() && Chance(0.3)) return name;
    }
    return absl::StrCat("tp", next_tier_policy_++);
  };
  for (int i = Uniform(1, options_.max_tier_policies); i > 0; --i) {
    int kind = Uniform(0, 2);
    if (kind == 0) {
      admin_names.push_back(fresh(admin_names, cluster_names));
      objects.admin_network_policies.push_back({RandomAdminNetworkPolicy(admin_names.back()), {}});
    } else if (kind == 1 && !baseline_taken) {
      baseline_taken = true;
      objects.baseline_admin_network_policies.push_back({RandomBaselineAdminNetworkPolicy(), {}});
    } else {
      cluster_names.push_back(fresh(cluster_names, admin_names));
      objects.cluster_network_policies.push_back(
          {RandomClusterNetworkPolicy(cluster_names.back()), {}});
    }
  }
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
  // Drawn last and only when enabled: clusters of existing seeds stay as they were.
  if (options_.tier_chance > 0 && Chance(options_.tier_chance)) AddTiers(objects);
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


Change RandomCluster::RandomTierChange(const Cluster& current) {
  const ClusterObjects objects = current.ToObjects();
  const auto& admins = objects.admin_network_policies;
  const auto& clusters = objects.cluster_network_policies;
  auto delete_of = [](const auto& object) {
    std::decay_t<decltype(object)> gone;
    gone.mutable_metadata()->set_name(object.metadata().name());
    return Change{Change::Op::kDelete, std::move(gone)};
  };
  // A new name, or now and then one the other kind uses (a same-priority tie by kind).
  auto name_for = [&](const auto& other) {
    if (!other.empty() && Chance(0.2)) return Pick(other).object.metadata().name();
    return absl::StrCat("tp", next_tier_policy_++);
  };
  switch (Uniform(0, 9)) {
    case 0:
      return Change{Change::Op::kUpsert, RandomAdminNetworkPolicy(name_for(clusters))};
    case 1:
      return Change{Change::Op::kUpsert, RandomClusterNetworkPolicy(name_for(admins))};
    case 2:
      return Change{Change::Op::kUpsert, RandomBaselineAdminNetworkPolicy()};
    case 3:  // an existing policy's rules rewritten
      if (!admins.empty()) {
        return Change{Change::Op::kUpsert,
                      RandomAdminNetworkPolicy(Pick(admins).object.metadata().name())};
      }
      [[fallthrough]];
    case 4:  // an existing policy moved to another priority (the evaluation order changes)
      if (!clusters.empty() && Chance(0.5)) {
        policy_networking::ClusterNetworkPolicy moved = Pick(clusters).object;
        moved.mutable_spec()->set_priority(Pick(kTierPriorities));
        return Change{Change::Op::kUpsert, moved};
      }
      if (!admins.empty()) {
        policy_networking::AdminNetworkPolicy moved = Pick(admins).object;
        moved.mutable_spec()->set_priority(Pick(kTierPriorities));
        return Change{Change::Op::kUpsert, moved};
      }
      return Change{Change::Op::kUpsert, RandomClusterNetworkPolicy(name_for(admins))};
    case 5:
      if (!admins.empty()) return delete_of(Pick(admins).object);
      [[fallthrough]];
    case 6:
      if (!clusters.empty()) return delete_of(Pick(clusters).object);
      if (!objects.baseline_admin_network_policies.empty()) {
        return delete_of(objects.baseline_admin_network_policies[0].object);
      }
      return Change{Change::Op::kUpsert, RandomAdminNetworkPolicy(name_for(clusters))};
    case 7:
    case 8:  // a Node added, relabeled or re-addressed
      return Change{Change::Op::kUpsert,
                    RandomNode(Pick(std::vector<std::string>{"node-1", "node-2", "node-3"}))};
    default:
      if (!objects.nodes.empty()) return delete_of(Pick(objects.nodes).object);
      return Change{Change::Op::kUpsert, RandomNode("node-3")};
  }
}

}  // namespace np::testgen
