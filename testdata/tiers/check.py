#!/usr/bin/python3 -B
"""Checks testdata/tiers: the committed files are what gen.py writes, every document parses,
every ReachabilityExpectation is well-formed (np/testing/expectation.h's format), every pod a
flow names exists in its file (and is not a host-network pod, which np leaves out), every IP end
is a node's address, every probed pod port is one the pod listens on (manifests.yaml runs one
container per port, named <StatefulSet>-<port>), and every policy has its API version's shape.

Usage: /usr/bin/python3 -B testdata/tiers/check.py     (exit 0: all good; 1: problems listed)
Needs PyYAML (Debian: python3-yaml).
"""

import collections
import ipaddress
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402

PROTOCOLS = {"TCP", "UDP", "SCTP"}
NAME_LABEL = "kubernetes.io/metadata.name"
# version -> (apiVersion, kinds, actions, ports field, port keys, max rules per direction)
SHAPES = {
    "v1alpha1": ("policy.networking.k8s.io/v1alpha1",
                 {"AdminNetworkPolicy", "BaselineAdminNetworkPolicy"}, {"Allow", "Deny", "Pass"},
                 "ports", {"portNumber", "namedPort", "portRange"}, 100),
    "v1alpha2": ("policy.networking.k8s.io/v1alpha2", {"ClusterNetworkPolicy"},
                 {"Accept", "Deny", "Pass"}, "protocols",
                 {"tcp", "udp", "sctp", "destinationNamedPort"}, 25),
}
INGRESS_PEERS = {"namespaces", "pods"}
EGRESS_PEERS = {"namespaces", "pods", "nodes", "networks", "domainNames"}


class FileCheck(object):
  def __init__(self, rel, docs):
    self.rel = rel
    self.docs = docs
    self.problems = []

  def problem(self, what):
    self.problems.append("%s: %s" % (self.rel, what))

  def run(self, version):
    by_kind = collections.defaultdict(list)
    for doc in self.docs:
      if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        self.problem("document without kind/apiVersion: %r" % (doc,))
        continue
      by_kind[doc["kind"]].append(doc)
    namespaces = {d["metadata"]["name"] for d in by_kind["Namespace"]}
    pods = {"%s/%s" % (d["metadata"]["namespace"], d["metadata"]["name"]): d
            for d in by_kind["Pod"]}
    node_ips = {a["address"] for d in by_kind["Node"] for a in d["status"]["addresses"]
                if a["type"] == "InternalIP"}
    for key, p in pods.items():
      if p["metadata"]["namespace"] not in namespaces:
        self.problem("pod %s: namespace not in the file" % key)
    shape = SHAPES[version]
    for kind in shape[1]:
      for policy in by_kind[kind]:
        self.check_policy(policy, shape, namespaces)
    for kind, docs in by_kind.items():
      known = {"Namespace", "Pod", "Node", "Service", "NetworkPolicy", "ReachabilityExpectation"}
      if kind not in known | shape[1]:
        self.problem("unexpected kind %s for %s" % (kind, version))
    names = set()
    for e in by_kind["ReachabilityExpectation"]:
      self.check_expectation(e, names, pods, node_ips)
    if not by_kind["ReachabilityExpectation"]:
      self.problem("no ReachabilityExpectation")

  def check_expectation(self, e, names, pods, node_ips):
    where = "expectation %s" % e.get("metadata", {}).get("name")
    if e["apiVersion"] != "np.dev/v1alpha1":
      self.problem("%s: apiVersion %s" % (where, e["apiVersion"]))
    extra = set(e) - {"apiVersion", "kind", "metadata", "source", "options", "cases", "flows"}
    if extra:
      self.problem("%s: unknown fields %s" % (where, sorted(extra)))
    name = e.get("metadata", {}).get("name")
    if not isinstance(name, str) or not name or name in names:
      self.problem("%s: metadata.name missing or not unique" % where)
    names.add(name)
    if not isinstance(e.get("source"), str) or not e["source"]:
      self.problem("%s: source missing" % where)
    options = e.get("options", {})
    if set(options) - {"ipBlockScope", "alwaysAllowSelf"}:
      self.problem("%s: unknown options %s" % (where, sorted(options)))
    if "cases" in e:
      self.problem("%s: tier files carry flows, not tables" % where)
    flows = e.get("flows")
    if not isinstance(flows, list) or not flows:
      self.problem("%s: no flows" % where)
      return
    for i, f in enumerate(flows):
      at = "%s: flows[%d]" % (where, i)
      if set(f) != {"from", "to", "protocol", "port", "allowed"}:
        self.problem("%s: fields %s" % (at, sorted(f)))
        continue
      if f["protocol"] not in PROTOCOLS:
        self.problem("%s: protocol %r" % (at, f["protocol"]))
      if not isinstance(f["port"], int) or isinstance(f["port"], bool) or \
         not 1 <= f["port"] <= 65535:
        self.problem("%s: port %r" % (at, f["port"]))
      if not isinstance(f["allowed"], bool):
        self.problem("%s: allowed %r" % (at, f["allowed"]))
      for end in ("from", "to"):
        self.check_end(at, end, f[end], pods, node_ips)
      if f["to"] in pods and not listens(pods[f["to"]], f["port"], f["protocol"]):
        self.problem("%s: %s does not listen on %s %d" % (at, f["to"], f["protocol"], f["port"]))
      if f["from"] == f["to"] and options.get("alwaysAllowSelf") is not False:
        self.problem("%s: a pod to itself needs options.alwaysAllowSelf: false" % at)

  def check_end(self, at, end, value, pods, node_ips):
    if "/" in str(value):
      if value not in pods:
        self.problem("%s: %s %s is not a pod of the file" % (at, end, value))
      elif pods[value]["spec"].get("hostNetwork"):
        self.problem("%s: %s %s is a host-network pod; name its node's address" % (at, end, value))
      return
    try:
      ipaddress.ip_address(value)
    except ValueError:
      self.problem("%s: %s %r is neither namespace/name nor an IP address" % (at, end, value))
      return
    if value not in node_ips:
      self.problem("%s: %s %s is not a node's address" % (at, end, value))

  def check_policy(self, policy, shape, namespaces):
    api_version, _, actions, ports_key, port_keys, max_rules = shape
    where = "%s %s" % (policy["kind"], policy["metadata"]["name"])
    if policy["apiVersion"] != api_version:
      self.problem("%s: apiVersion %s" % (where, policy["apiVersion"]))
    spec = policy["spec"]
    if policy["kind"] == "ClusterNetworkPolicy" and spec.get("tier") not in ("Admin", "Baseline"):
      self.problem("%s: tier %r" % (where, spec.get("tier")))
    if policy["kind"] != "BaselineAdminNetworkPolicy" and \
       not (isinstance(spec.get("priority"), int) and 0 <= spec["priority"] <= 1000):
      self.problem("%s: priority %r" % (where, spec.get("priority")))
    if policy["kind"] == "BaselineAdminNetworkPolicy" and "priority" in spec:
      self.problem("%s: a BaselineAdminNetworkPolicy has no priority" % where)
    subject = spec.get("subject", {})
    if len(subject) != 1 or next(iter(subject)) not in ("namespaces", "pods"):
      self.problem("%s: subject must set exactly one of namespaces, pods" % where)
    self.check_selectors(where, subject, namespaces)
    for direction, peers_key, allowed_peers in (("ingress", "from", INGRESS_PEERS),
                                                ("egress", "to", EGRESS_PEERS)):
      rules = spec.get(direction, [])
      if len(rules) > max_rules:
        self.problem("%s: %d %s rules (at most %d)" % (where, len(rules), direction, max_rules))
      for i, r in enumerate(rules):
        at = "%s: %s[%d]" % (where, direction, i)
        if set(r) - {"name", "action", peers_key, ports_key}:
          self.problem("%s: fields %s" % (at, sorted(r)))
        if r.get("action") not in actions:
          self.problem("%s: action %r" % (at, r.get("action")))
        if policy["kind"] == "BaselineAdminNetworkPolicy" and r.get("action") == "Pass":
          self.problem("%s: Pass in a BaselineAdminNetworkPolicy" % at)
        peers = r.get(peers_key) or []
        if not peers:
          self.problem("%s: no peers" % at)
        for peer in peers:
          if len(peer) != 1 or next(iter(peer)) not in allowed_peers:
            self.problem("%s: peer %r" % (at, peer))
          self.check_selectors(at, peer, namespaces)
        for p in r.get(ports_key) or []:
          if len(p) != 1 or next(iter(p)) not in port_keys:
            self.problem("%s: %s entry %r" % (at, ports_key, p))

  def check_selectors(self, where, holder, namespaces):
    """Every namespace a selector names by kubernetes.io/metadata.name exists in the file."""
    def walk(node):
      if isinstance(node, dict):
        labels = node.get("matchLabels") or {}
        if NAME_LABEL in labels and labels[NAME_LABEL] not in namespaces:
          self.problem("%s: selects namespace %s, not in the file" % (where, labels[NAME_LABEL]))
        for v in node.values():
          walk(v)
      elif isinstance(node, list):
        for v in node:
          walk(v)
    walk(holder)


def listens(pod, port_number, protocol):
  """manifests.yaml: container <StatefulSet>-<port> serves that port (the protocol is in its
  command, which the files leave out); the ports upstream declares must agree."""
  stateful_set = pod["metadata"]["name"].rsplit("-", 1)[0]
  containers = pod["spec"]["containers"]
  if not any(c["name"] == "%s-%d" % (stateful_set, port_number) for c in containers):
    return False
  declared = [p for c in containers for p in c.get("ports", []) if p["containerPort"] == port_number]
  return all(p["protocol"] == protocol for p in declared)


def main():
  problems = []
  expected = gen.render_all()
  on_disk = {}
  for version in gen.SUITES:
    directory = os.path.join(HERE, version.version)
    for name in sorted(os.listdir(directory)):
      if name.endswith(".yaml"):
        with open(os.path.join(directory, name)) as f:
          on_disk[os.path.join(version.version, name)] = f.read()
  for rel in sorted(set(expected) | set(on_disk)):
    if expected.get(rel) != on_disk.get(rel):
      problems.append("%s: differs from what gen.py writes (rerun gen.py)" % rel)
  counts = collections.Counter()
  for rel, text in sorted(on_disk.items()):
    version = rel.split(os.sep)[0]
    try:
      docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
      problems.append("%s: %s" % (rel, e))
      continue
    check = FileCheck(rel, docs)
    check.run(version)
    problems.extend(check.problems)
    counts[version + " files"] += 1
    counts[version + " flows"] += sum(len(d["flows"]) for d in docs
                                      if d.get("kind") == "ReachabilityExpectation")
  for p in problems:
    print(p)
  print("; ".join("%s: %d files, %d flows" % (v.version, counts[v.version + " files"],
                                              counts[v.version + " flows"]) for v in gen.SUITES))
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
