#include "bench/cluster_generator.h"

#include <random>

#include "absl/strings/str_cat.h"

namespace np::bench {
namespace {

struct Deployment {
  const char* app;
  const char* tier;
  std::vector<std::tuple<const char*, const char*, int>> ports;  // name, protocol, number
};
const std::vector<Deployment>& Deployments() {
  static const auto* d = new std::vector<Deployment>{
      {"frontend", "web", {{"http", "TCP", 8080}, {"metrics", "TCP", 9090}}},
      {"api", "backend", {{"http", "TCP", 8080}, {"grpc", "TCP", 9000}, {"metrics", "TCP", 9090}}},
      {"worker", "backend", {{"metrics", "TCP", 9090}}},
      {"db", "data", {{"postgres", "TCP", 5432}}},
      {"cache", "data", {{"redis", "TCP", 6379}}},
  };
  return *d;
}

k8s::Namespace MakeNamespace(const std::string& name,
                             std::vector<std::pair<std::string, std::string>> labels) {
  k8s::Namespace ns;
  ns.mutable_metadata()->set_name(name);
  for (auto& [k, v] : labels) (*ns.mutable_metadata()->mutable_labels())[k] = v;
  return ns;
}

// Pod number `serial` gets 10.<serial / 65536 + 64>.<...>.<...> and fd00:64::<serial>.
k8s::Pod MakePod(const SyntheticOptions& o, const std::string& ns, const std::string& name,
                 const Deployment& d, const std::string& hash, int64_t serial) {
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_(ns);
  pod.mutable_metadata()->set_name(name);
  auto& labels = *pod.mutable_metadata()->mutable_labels();
  labels["app"] = d.app;
  labels["tier"] = d.tier;
  labels["pod-template-hash"] = hash;
  labels["version"] = "v1";
  pod.mutable_spec()->set_nodename(absl::StrCat("node-", serial % o.nodes));
  k8s::Container* c = pod.mutable_spec()->add_containers();
  c->set_name(d.app);
  for (const auto& [port_name, protocol, number] : d.ports) {
    k8s::ContainerPort* p = c->add_ports();
    p->set_name(port_name);
    p->set_protocol(protocol);
    p->set_containerport(number);
  }
  pod.mutable_status()->set_phase("Running");
  int64_t v4 = (int64_t{10} << 24) + (int64_t{64} << 16) + serial;  // 10.64.0.0/10 onwards
  std::string ip = absl::StrCat(v4 >> 24, ".", (v4 >> 16) & 255, ".", (v4 >> 8) & 255, ".", v4 & 255);
  pod.mutable_status()->set_podip(ip);
  pod.mutable_status()->add_podips()->set_ip(ip);
  if (o.dual_stack) {
    pod.mutable_status()->add_podips()->set_ip(
        absl::StrCat("fd00:64::", absl::Hex(serial >> 16), ":", absl::Hex(serial & 0xffff)));
  }
  return pod;
}

void Select(k8s::LabelSelector* s, std::vector<std::pair<std::string, std::string>> labels) {
  for (auto& [k, v] : labels) (*s->mutable_matchlabels())[k] = v;
}

void NamedPort(k8s::NetworkPolicyPort* p, const std::string& name) {
  p->set_protocol("TCP");
  p->mutable_port()->set_type(1);
  p->mutable_port()->set_strval(name);
}

void NumberPort(k8s::NetworkPolicyPort* p, const std::string& protocol, int number) {
  p->set_protocol(protocol);
  p->mutable_port()->set_type(0);
  p->mutable_port()->set_intval(number);
}

// The policy templates, cycled through per namespace: template 0 is the namespace's
// default deny; the rest open what the application needs.
k8s::NetworkPolicy MakePolicy(const std::string& ns, int template_index, int n) {
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_(ns);
  k8s::NetworkPolicySpec* spec = p.mutable_spec();
  switch (template_index % 8) {
    case 0:
      p.mutable_metadata()->set_name("default-deny");
      spec->mutable_podselector();
      spec->add_policytypes("Ingress");
      spec->add_policytypes("Egress");
      break;
    case 1: {
      p.mutable_metadata()->set_name("allow-dns");
      spec->mutable_podselector();
      spec->add_policytypes("Egress");
      auto* rule = spec->add_egress();
      auto* to = rule->add_to();
      Select(to->mutable_namespaceselector(), {{"kubernetes.io/metadata.name", "kube-system"}});
      Select(to->mutable_podselector(), {{"k8s-app", "kube-dns"}});
      NumberPort(rule->add_ports(), "UDP", 53);
      NumberPort(rule->add_ports(), "TCP", 53);
      break;
    }
    case 2: {
      p.mutable_metadata()->set_name("frontend-from-ingress");
      Select(spec->mutable_podselector(), {{"app", "frontend"}});
      auto* rule = spec->add_ingress();
      Select(rule->add_from()->mutable_namespaceselector(),
             {{"kubernetes.io/metadata.name", "ingress-nginx"}});
      NamedPort(rule->add_ports(), "http");
      break;
    }
    case 3: {
      p.mutable_metadata()->set_name("api-from-frontend");
      Select(spec->mutable_podselector(), {{"app", "api"}});
      auto* rule = spec->add_ingress();
      Select(rule->add_from()->mutable_podselector(), {{"app", "frontend"}});
      NamedPort(rule->add_ports(), "http");
      NamedPort(rule->add_ports(), "grpc");
      auto* egress = spec->add_egress();
      Select(egress->add_to()->mutable_podselector(), {{"tier", "data"}});
      spec->add_policytypes("Ingress");
      spec->add_policytypes("Egress");
      break;
    }
    case 4: {
      p.mutable_metadata()->set_name("data-from-backend");
      Select(spec->mutable_podselector(), {{"tier", "data"}});
      auto* rule = spec->add_ingress();
      Select(rule->add_from()->mutable_podselector(), {{"tier", "backend"}});
      NumberPort(rule->add_ports(), "TCP", 5432);
      NumberPort(rule->add_ports(), "TCP", 6379);
      break;
    }
    case 5: {
      p.mutable_metadata()->set_name("allow-prometheus");
      spec->mutable_podselector();
      auto* rule = spec->add_ingress();
      auto* from = rule->add_from();
      Select(from->mutable_namespaceselector(), {{"team", "monitoring"}});
      Select(from->mutable_podselector(), {{"app", "prometheus"}});
      NamedPort(rule->add_ports(), "metrics");
      break;
    }
    case 6: {
      p.mutable_metadata()->set_name("frontend-internet-egress");
      Select(spec->mutable_podselector(), {{"app", "frontend"}});
      spec->add_policytypes("Egress");
      auto* rule = spec->add_egress();
      auto* block = rule->add_to()->mutable_ipblock();
      block->set_cidr("0.0.0.0/0");
      block->add_except("10.0.0.0/8");
      block->add_except("172.16.0.0/12");
      block->add_except("192.168.0.0/16");
      NumberPort(rule->add_ports(), "TCP", 443);
      auto* range = rule->add_ports();
      NumberPort(range, "TCP", 30000);
      range->set_endport(32767);
      break;
    }
    default: {
      p.mutable_metadata()->set_name("office-to-frontend");
      Select(spec->mutable_podselector(), {{"app", "frontend"}});
      auto* rule = spec->add_ingress();
      rule->add_from()->mutable_ipblock()->set_cidr(absl::StrCat("203.0.", n % 256, ".0/24"));
      auto* api = rule->add_from();
      Select(api->mutable_namespaceselector(), {{"env", "staging"}});
      auto* expr = api->mutable_podselector()->add_matchexpressions();
      expr->set_key("app");
      expr->set_operator_("In");
      expr->add_values("api");
      expr->add_values("worker");
      NumberPort(rule->add_ports(), "TCP", 443);
      break;
    }
  }
  // Several policies of the same template in one namespace need distinct names.
  if (template_index >= 8) {
    p.mutable_metadata()->set_name(
        absl::StrCat(p.metadata().name(), "-", template_index / 8));
  }
  return p;
}

// ---- the cluster-scoped tiers (AddAdminTiers)

namespace api = policy_networking;

void Expression(k8s::LabelSelector* s, const std::string& key, const std::string& op,
                std::vector<std::string> values = {}) {
  auto* e = s->add_matchexpressions();
  e->set_key(key);
  e->set_operator_(op);
  for (std::string& v : values) e->add_values(std::move(v));
}

// The application namespaces (they carry `env`; kube-system, monitoring and ingress-nginx
// do not).
void AppNamespaces(k8s::LabelSelector* s) { Expression(s, "env", "Exists"); }

template <typename Rule>
Rule* AddRule(google::protobuf::RepeatedPtrField<Rule>* rules, const std::string& name,
              const std::string& action) {
  Rule* rule = rules->Add();
  rule->set_name(name);
  rule->set_action(action);
  return rule;
}

template <typename Rule>
k8s::LabelSelector* NamespacesPeer(Rule* rule) {
  return rule->add_peers()->mutable_namespaces();
}

template <typename Rule>
void PodsPeer(Rule* rule, std::vector<std::pair<std::string, std::string>> namespace_labels,
              std::vector<std::pair<std::string, std::string>> pod_labels) {
  api::NamespacedPod* pods = rule->add_peers()->mutable_pods();
  Select(pods->mutable_namespaceselector(), std::move(namespace_labels));
  Select(pods->mutable_podselector(), std::move(pod_labels));
}

template <typename Rule>
void NetworksPeer(Rule* rule, std::vector<std::string> networks) {
  api::Peer* peer = rule->add_peers();
  for (std::string& n : networks) peer->add_networks(std::move(n));
}

// v1alpha1 ports.
void PortNumber(api::AdminNetworkPolicyRule* rule, const std::string& protocol, int port) {
  api::PortNumber* p = rule->add_ports()->mutable_portnumber();
  p->set_protocol(protocol);
  p->set_port(port);
}
void PortRange(api::AdminNetworkPolicyRule* rule, const std::string& protocol, int start,
               int end) {
  api::PortRange* p = rule->add_ports()->mutable_portrange();
  p->set_protocol(protocol);
  p->set_start(start);
  p->set_end(end);
}
void NamedPort(api::AdminNetworkPolicyRule* rule, const std::string& name) {
  rule->add_ports()->set_namedport(name);
}

// v1alpha2 protocols.
api::ClusterNetworkPolicyPort* DestinationPort(api::ClusterNetworkPolicyRule* rule,
                                        const std::string& protocol) {
  api::ClusterNetworkPolicyProtocol* p = rule->add_protocols();
  api::ClusterNetworkPolicyProtocolPorts* ports =
      protocol == "UDP" ? p->mutable_udp() : protocol == "SCTP" ? p->mutable_sctp() : p->mutable_tcp();
  return ports->mutable_destinationport();
}
void PortNumber(api::ClusterNetworkPolicyRule* rule, const std::string& protocol, int port) {
  DestinationPort(rule, protocol)->set_number(port);
}
void PortRange(api::ClusterNetworkPolicyRule* rule, const std::string& protocol, int start,
               int end) {
  api::ClusterNetworkPolicyPortRange* range = DestinationPort(rule, protocol)->mutable_range();
  range->set_start(start);
  range->set_end(end);
}

api::AdminNetworkPolicySpec* NewAdminPolicy(ClusterObjects& objects, const std::string& name,
                                            int priority) {
  api::AdminNetworkPolicy policy;
  policy.mutable_metadata()->set_name(name);
  policy.mutable_spec()->set_priority(priority);
  objects.admin_network_policies.push_back({std::move(policy), {}});
  return objects.admin_network_policies.back().object.mutable_spec();
}

api::ClusterNetworkPolicySpec* NewClusterPolicy(ClusterObjects& objects, const std::string& name,
                                                int priority) {
  api::ClusterNetworkPolicy policy;
  policy.mutable_metadata()->set_name(name);
  policy.mutable_spec()->set_tier("Admin");
  policy.mutable_spec()->set_priority(priority);
  objects.cluster_network_policies.push_back({std::move(policy), {}});
  return objects.cluster_network_policies.back().object.mutable_spec();
}

std::string Team(int t) { return absl::StrCat("team-", t); }

}  // namespace

void AddAdminTiers(const SyntheticOptions& o, ClusterObjects& objects) {
  const int teams = std::min(20, o.namespaces);  // GenerateCluster: team-(n mod 20)
  // Priority 1: monitoring scrapes every application's metrics port, whatever teams write.
  {
    auto* spec = NewAdminPolicy(objects, "allow-monitoring", 1);
    AppNamespaces(spec->mutable_subject()->mutable_namespaces());
    auto* rule = AddRule(spec->mutable_ingress(), "prometheus", "Allow");
    PodsPeer(rule, {{"team", "monitoring"}}, {{"app", "prometheus"}});
    NamedPort(rule, "metrics");
  }
  // 2: every pod reaches cluster DNS.
  {
    auto* spec = NewClusterPolicy(objects, "allow-dns", 2);
    spec->mutable_subject()->mutable_namespaces();  // every namespace
    auto* rule = AddRule(spec->mutable_egress(), "kube-dns", "Accept");
    PodsPeer(rule, {{"kubernetes.io/metadata.name", "kube-system"}}, {{"k8s-app", "kube-dns"}});
    PortNumber(rule, "UDP", 53);
    PortNumber(rule, "TCP", 53);
  }
  // 3: the ingress controller reaches frontends' http port; nothing else from outside the
  // application namespaces but monitoring (above) and DNS replies.
  {
    auto* spec = NewAdminPolicy(objects, "ingress-controller", 3);
    auto* pods = spec->mutable_subject()->mutable_pods();
    AppNamespaces(pods->mutable_namespaceselector());
    Select(pods->mutable_podselector(), {{"app", "frontend"}});
    auto* rule = AddRule(spec->mutable_ingress(), "from-ingress-nginx", "Allow");
    Select(NamespacesPeer(rule), {{"kubernetes.io/metadata.name", "ingress-nginx"}});
    NamedPort(rule, "http");
  }
  // 5-10: environments: production refuses development, staging's database traffic and
  // node ports; nobody serves telnet, FTP or TFTP; staging and development may not call
  // production.
  {
    auto* spec = NewAdminPolicy(objects, "prod-from-dev", 5);
    Select(spec->mutable_subject()->mutable_namespaces(), {{"env", "prod"}});
    Select(NamespacesPeer(AddRule(spec->mutable_ingress(), "dev", "Deny")), {{"env", "dev"}});
  }
  {
    auto* spec = NewAdminPolicy(objects, "prod-data-from-staging", 6);
    auto* pods = spec->mutable_subject()->mutable_pods();
    Select(pods->mutable_namespaceselector(), {{"env", "prod"}});
    Select(pods->mutable_podselector(), {{"tier", "data"}});
    auto* rule = AddRule(spec->mutable_ingress(), "staging-db", "Deny");
    Select(NamespacesPeer(rule), {{"env", "staging"}});
    NamedPort(rule, "postgres");
    PortNumber(rule, "TCP", 6379);
  }
  {
    auto* spec = NewClusterPolicy(objects, "no-node-ports", 7);
    AppNamespaces(spec->mutable_subject()->mutable_namespaces());
    auto* rule = AddRule(spec->mutable_ingress(), "node-ports", "Deny");
    NamespacesPeer(rule);  // every namespace
    PortRange(rule, "TCP", 30000, 32767);
    PortRange(rule, "UDP", 30000, 32767);
  }
  {
    auto* spec = NewClusterPolicy(objects, "no-legacy-services", 8);
    AppNamespaces(spec->mutable_subject()->mutable_namespaces());
    auto* rule = AddRule(spec->mutable_ingress(), "telnet-ftp-tftp", "Deny");
    NamespacesPeer(rule);
    PortNumber(rule, "TCP", 23);
    PortRange(rule, "TCP", 20, 21);
    PortNumber(rule, "UDP", 69);
  }
  {
    auto* spec = NewAdminPolicy(objects, "staging-not-to-prod", 9);
    Select(spec->mutable_subject()->mutable_namespaces(), {{"env", "staging"}});
    auto* rule = AddRule(spec->mutable_egress(), "prod", "Deny");
    Select(NamespacesPeer(rule), {{"env", "prod"}});
    PortRange(rule, "TCP", 1, 65535);
  }
  {
    auto* spec = NewClusterPolicy(objects, "dev-not-to-prod", 10);
    Select(spec->mutable_subject()->mutable_namespaces(), {{"env", "dev"}});
    auto* rule = AddRule(spec->mutable_egress(), "prod", "Deny");
    Select(NamespacesPeer(rule), {{"env", "prod"}});
  }
  // 20-39: tenant isolation. A team's own namespaces are the team's business (Pass: its
  // NetworkPolicies decide); other application namespaces are denied.
  for (int t = 0; t < 20; ++t) {
    auto* spec = NewAdminPolicy(objects, absl::StrCat("isolate-", Team(t % teams), "-", t / teams), 20 + t);
    Select(spec->mutable_subject()->mutable_namespaces(), {{"team", Team(t % teams)}});
    Select(NamespacesPeer(AddRule(spec->mutable_ingress(), "same-team", "Pass")),
           {{"team", Team(t % teams)}});
    k8s::LabelSelector* others = NamespacesPeer(AddRule(spec->mutable_ingress(), "other-teams", "Deny"));
    AppNamespaces(others);
    Expression(others, "team", "NotIn", {Team(t % teams)});
  }
  // 40-59: per team, data pods talk to their own team's namespaces (Pass) and never open
  // database or cache connections elsewhere.
  for (int t = 0; t < 20; ++t) {
    auto* spec = NewClusterPolicy(objects, absl::StrCat("data-egress-", Team(t % teams), "-", t / teams), 40 + t);
    auto* pods = spec->mutable_subject()->mutable_pods();
    Select(pods->mutable_namespaceselector(), {{"team", Team(t % teams)}});
    Select(pods->mutable_podselector(), {{"tier", "data"}});
    Select(NamespacesPeer(AddRule(spec->mutable_egress(), "same-team", "Pass")),
           {{"team", Team(t % teams)}});
    auto* rule = AddRule(spec->mutable_egress(), "other-data", "Deny");
    NamespacesPeer(rule);
    PortNumber(rule, "TCP", 5432);
    PortNumber(rule, "TCP", 6379);
  }
  // 70: application pods do not reach the internet: cluster addresses go on to the teams'
  // policies, every other address is denied.
  {
    auto* spec = NewClusterPolicy(objects, "no-internet-egress", 70);
    AppNamespaces(spec->mutable_subject()->mutable_namespaces());
    NetworksPeer(AddRule(spec->mutable_egress(), "cluster", "Pass"), {"10.0.0.0/8", "fd00::/8"});
    NetworksPeer(AddRule(spec->mutable_egress(), "internet", "Deny"), {"0.0.0.0/0", "::/0"});
  }
  // The baseline: what no NetworkPolicy decides in application namespaces is denied, but
  // DNS.
  api::BaselineAdminNetworkPolicy baseline;
  baseline.mutable_metadata()->set_name("default");
  auto* spec = baseline.mutable_spec();
  AppNamespaces(spec->mutable_subject()->mutable_namespaces());
  NamespacesPeer(AddRule(spec->mutable_ingress(), "default-deny", "Deny"));
  auto* dns = AddRule(spec->mutable_egress(), "dns", "Allow");
  PodsPeer(dns, {{"kubernetes.io/metadata.name", "kube-system"}}, {{"k8s-app", "kube-dns"}});
  PortNumber(dns, "UDP", 53);
  NamespacesPeer(AddRule(spec->mutable_egress(), "default-deny", "Deny"));
  objects.baseline_admin_network_policies.push_back({std::move(baseline), {}});
}


std::string AppNamespace(int index) { return absl::StrCat("app-", index); }

SyntheticOptions SizeForPods(int pods) {
  SyntheticOptions o;
  o.namespaces = std::max(1, pods / 20);
  o.pods_per_namespace = 20;
  o.policies = std::max(1, pods / 5);
  o.nodes = std::max(1, pods / 200);
  return o;
}

ClusterObjects GenerateCluster(const SyntheticOptions& o) {
  ClusterObjects objects;
  std::mt19937_64 rng(o.seed);
  static const char* kEnvs[] = {"prod", "staging", "dev"};
  objects.namespaces.push_back({MakeNamespace("kube-system", {}), {}});
  objects.namespaces.push_back({MakeNamespace("monitoring", {{"team", "monitoring"}}), {}});
  objects.namespaces.push_back({MakeNamespace("ingress-nginx", {{"team", "platform"}}), {}});
  int64_t serial = 0;
  auto infra_pod = [&](const std::string& ns, const std::string& name,
                       std::vector<std::pair<std::string, std::string>> labels) {
    Deployment d{"infra", "infra", {{"dns", "UDP", 53}}};
    k8s::Pod pod = MakePod(o, ns, name, d, "infra", serial++);
    auto& l = *pod.mutable_metadata()->mutable_labels();
    l.clear();
    for (auto& [k, v] : labels) l[k] = v;
    objects.pods.push_back({std::move(pod), {}});
  };
  for (int i = 0; i < 2; ++i) infra_pod("kube-system", absl::StrCat("coredns-", i), {{"k8s-app", "kube-dns"}});
  infra_pod("monitoring", "prometheus-0", {{"app", "prometheus"}});
  for (int i = 0; i < 2; ++i) infra_pod("ingress-nginx", absl::StrCat("controller-", i), {{"app", "ingress-nginx"}});

  const int deployments_per_ns = std::max(1, o.pods_per_namespace / 5);
  for (int n = 0; n < o.namespaces; ++n) {
    std::string ns = AppNamespace(n);
    objects.namespaces.push_back(
        {MakeNamespace(ns, {{"team", absl::StrCat("team-", n % 20)}, {"env", kEnvs[n % 3]}}), {}});
    for (int d = 0; d < deployments_per_ns; ++d) {
      const Deployment& dep = Deployments()[(n + d) % Deployments().size()];
      std::string hash = absl::StrCat(absl::Hex(rng() & 0xffffffffff));
      int replicas = o.pods_per_namespace / deployments_per_ns;
      for (int r = 0; r < replicas; ++r) {
        objects.pods.push_back(
            {MakePod(o, ns, absl::StrCat(dep.app, "-", d, "-", hash, "-", r), dep, hash, serial++), {}});
      }
    }
  }
  for (int i = 0; i < o.policies; ++i) {
    int n = i % o.namespaces;
    int template_index = i / o.namespaces;
    objects.policies.push_back({MakePolicy(AppNamespace(n), template_index, i), {}});
  }
  return objects;
}

k8s::NetworkPolicy ExtraPolicy(const SyntheticOptions& o, int namespace_index, int n) {
  k8s::NetworkPolicy p = MakePolicy(AppNamespace(namespace_index), 3 + (n % 5), n);
  p.mutable_metadata()->set_name(absl::StrCat("extra-", n));
  (void)o;
  return p;
}

ClusterObjects DistinctPeersCluster(int peers, int prefixes_per_peer, int shift) {
  ClusterObjects objects;
  objects.namespaces.push_back({MakeNamespace("x", {}), {}});
  SyntheticOptions single;
  single.nodes = 1;
  single.dual_stack = false;
  k8s::Pod server = MakePod(single, "x", "server", {"server", "server", {}}, "0", 0);
  server.mutable_status()->set_podip("10.0.0.1");
  server.mutable_status()->mutable_podips(0)->set_ip("10.0.0.1");
  objects.pods.push_back({std::move(server), {}});
  k8s::NetworkPolicy policy;
  policy.mutable_metadata()->set_namespace_("x");
  policy.mutable_metadata()->set_name("distinct-peers");
  policy.mutable_spec()->mutable_podselector();
  const int k = std::max(1, prefixes_per_peer);
  // Blocks 2^(k+1) apart: a gap after each, so neighbouring peers never touch.
  auto address = [](int64_t a) {
    return absl::StrCat(a >> 24, ".", (a >> 16) & 255, ".", (a >> 8) & 255, ".", a & 255);
  };
  for (int i = 0; i < peers; ++i) {
    const int64_t base = (int64_t{11} << 24) + ((int64_t{i} + shift) << (k + 1));
    auto* rule = policy.mutable_spec()->add_ingress();
    auto* block = rule->add_from()->mutable_ipblock();
    block->set_cidr(absl::StrCat(address(base), "/", 32 - (k == 1 ? 0 : k)));
    // A block of 2^k minus its second address: base/32, base+2/31, base+4/30, ... (k prefixes).
    if (k > 1) block->add_except(absl::StrCat(address(base + 1), "/32"));
    NumberPort(rule->add_ports(), "TCP", 1 + i % 65535);
  }
  objects.policies.push_back({std::move(policy), {}});
  return objects;
}

}  // namespace np::bench
