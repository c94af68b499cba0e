"""Pieces of testdata/tiers/gen.py: the network-policy-api conformance cluster, a small model of
AdminNetworkPolicy / BaselineAdminNetworkPolicy / ClusterNetworkPolicy rules that renders each
API version's shape, and a recorder that mirrors how upstream's tests run (t.Run steps that
probe, mutations of the applied policies in between).

Standard library only; the YAML writer and the expectation documents come from
../upstream/npgen.py. Nothing here computes a verdict: every expected result is written in
gen.py as upstream's test states it.
"""

import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "upstream"))
import npgen  # noqa: E402

UPSTREAM = "kubernetes-sigs/network-policy-api"
TCP, UDP, SCTP = "TCP", "UDP", "SCTP"
NS_PREFIX = "network-policy-conformance-"
NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
HOUSE_LABEL = "conformance-house"  # upstream's base/manifests.yaml labels
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"  # set by the StatefulSet controller
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.43"  # the image manifests.yaml runs

# ---------------------------------------------------------------------------------------------
# The cluster: upstream's conformance/base/manifests.yaml.
#
# Every house is a namespace with one or two StatefulSets of 2 replicas. Pods keep their
# StatefulSet names (<set>-0, <set>-1) and labels (conformance-house, plus the pod-name label the
# StatefulSet controller adds and the policies select on). Replica 0 runs on node-1, replica 1
# on node-2. Addresses follow ../upstream/README.md: the pod with 1-based index P in the
# namespace with 1-based index N has 10.N.0.P and fd00:10:N::P; the namespace order below is
# fixed, so a pod has the same address in both suites. forbidden-forrest's pods are host-network
# pods: their addresses are their node's.

NODES = [("node-1", "172.18.0.2", "fc00:f853:ccd:e793::2"),
         ("node-2", "172.18.0.3", "fc00:f853:ccd:e793::3")]
NODE_LABELS = {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}


def node_ipv4(name):
  return next(v4 for n, v4, _ in NODES if n == name)


def _server_containers(stateful_set, listeners):
  """manifests.yaml: a client container and one agnhost container per listening port; only some
  of them declare a containerPort (listeners: (port, declared name or None, protocol))."""
  out = [("%s-client" % stateful_set, AGNHOST, [])]
  for port, port_name, protocol in listeners:
    declared = [(port_name, port, protocol)] if port_name else []
    out.append(("%s-%d" % (stateful_set, port), AGNHOST, declared))
  return out


# The houses' servers (manifests.yaml @d48faeeb, also @4d5b6932 for these four houses): TCP 80
# (declared as "web"), TCP 8080, UDP 5353, UDP 53 (declared as "dns"), SCTP 9003 and 9005.
HOUSE_LISTENERS = [(80, "web", TCP), (8080, None, TCP), (5353, None, UDP), (53, "dns", UDP),
                   (9003, None, SCTP), (9005, None, SCTP)]
# hogwarts-staff (manifests.yaml @4d5b6932) listens on the same ports and declares none.
STAFF_LISTENERS = [(p, None, proto) for p, _, proto in HOUSE_LISTENERS]
# centaur (manifests.yaml @d48faeeb), a host-network StatefulSet.
CENTAUR_LISTENERS = [(36363, "web-36363", TCP), (36364, "web-36364", TCP), (5353, None, UDP),
                     (53, "dns", UDP), (9003, None, SCTP), (9005, None, SCTP)]

# (house, [(StatefulSet, listeners)], host network)
HOUSES = [
    ("gryffindor", [("harry-potter", HOUSE_LISTENERS)], False),
    ("slytherin", [("draco-malfoy", HOUSE_LISTENERS)], False),
    ("hufflepuff", [("cedric-diggory", HOUSE_LISTENERS)], False),
    ("ravenclaw", [("luna-lovegood", HOUSE_LISTENERS)], False),
    ("forbidden-forrest", [("centaur", CENTAUR_LISTENERS)], True),
    ("hogwarts-staff", [("professor-dumbledore", STAFF_LISTENERS),
                        ("professor-quirrell", STAFF_LISTENERS)], False),
]


def cluster(houses):
  """The Model and the Node documents of a suite whose manifests have these houses."""
  namespaces = []
  for house, stateful_sets, host_network in HOUSES:
    if house not in houses:
      continue
    pods = []
    for stateful_set, listeners in stateful_sets:
      for replica, (node, v4, v6) in enumerate(NODES):
        name = "%s-%d" % (stateful_set, replica)
        extras = {"node": node}
        if host_network:
          extras.update(host_network=True, ips=(v4, v6))
        pods.append((name, {HOUSE_LABEL: house, POD_NAME_LABEL: name},
                     _server_containers(stateful_set, listeners), extras))
    namespaces.append((NS_PREFIX + house, {HOUSE_LABEL: house}, pods))
  nodes = [npgen.node_document(n, dict(NODE_LABELS, **{"kubernetes.io/hostname": n}), v4, v6)
           for n, v4, v6 in NODES]
  return npgen.Model(namespaces), nodes


def pod(house, name):
  """namespace/name of a pod, as expectation flows name it."""
  return "%s%s/%s" % (NS_PREFIX, house, name)


# ---------------------------------------------------------------------------------------------
# Policy rules, independent of the API version; render() writes them in one version's shape.
#
# Peers:  ("namespaces", selector) | ("pods", namespace selector or None, pod selector)
#         | ("nodes", selector) | ("networks", [cidr, ...])
# Ports:  ("number", protocol, port) | ("range", protocol, start, end) | ("named", name)
# Actions are written with v1alpha1's words (Allow, Deny, Pass); v1alpha2 spells Allow "Accept".


def house_ns(house):
  """namespaceSelector on the name label, the way most upstream policies select a house."""
  return npgen.selector(match_labels={NAME_LABEL: NS_PREFIX + house})


def house_label(house):
  """Selector on conformance-house (namespaces and pods carry it)."""
  return npgen.selector(match_labels={HOUSE_LABEL: house})


def pod_name(name):
  return npgen.selector(match_labels={POD_NAME_LABEL: name})


def namespaces(sel):
  return ("namespaces", sel)


def pods(ns_sel, pod_sel):
  return ("pods", ns_sel, pod_sel)


def nodes(sel):
  return ("nodes", sel)


def networks(*cidrs):
  return ("networks", list(cidrs))


def port(protocol, number):
  return ("number", protocol, number)


def port_range(protocol, start, end):
  return ("range", protocol, start, end)


def named_port(name):
  return ("named", name)


def rule(name, action, peers, ports=None):
  return {"name": name, "action": action, "peers": list(peers), "ports": ports}


class Policy(object):
  """One admin-tier or baseline-tier policy (or a NetworkPolicy, kept as its YAML)."""

  def __init__(self, name, tier, priority=None, subject=None, ingress=None, egress=None,
               network_policy=None):
    self.name = name
    self.tier = tier  # "Admin", "Baseline" or "NetworkPolicy"
    self.priority = priority
    self.subject = subject  # ("namespaces", sel) or ("pods", ns_sel, pod_sel)
    self.ingress = ingress  # list of rules, or None when the policy has no ingress section
    self.egress = egress
    self.network_policy = network_policy


def _selector_subject(subject):
  if subject[0] == "namespaces":
    return {"namespaces": subject[1]}
  out = {}
  if subject[1] is not None:
    out["namespaceSelector"] = subject[1]
  out["podSelector"] = subject[2]
  return {"pods": out}


def _peer(peer):
  if peer[0] in ("namespaces", "pods"):
    return _selector_subject(peer)
  return {peer[0]: peer[1]}


def _v1alpha1_port(p):
  if p[0] == "number":
    return {"portNumber": {"protocol": p[1], "port": p[2]}}
  if p[0] == "range":
    return {"portRange": {"protocol": p[1], "start": p[2], "end": p[3]}}
  return {"namedPort": p[1]}


def _v1alpha2_protocol(p):
  if p[0] == "number":
    return {p[1].lower(): {"destinationPort": {"number": p[2]}}}
  if p[0] == "range":
    return {p[1].lower(): {"destinationPort": {"range": {"start": p[2], "end": p[3]}}}}
  return {"destinationNamedPort": p[1]}


# version -> (apiVersion, how a rule spells Allow, ports key, one port's shape)
_SHAPES = {
    "v1alpha1": ("policy.networking.k8s.io/v1alpha1", "Allow", "ports", _v1alpha1_port),
    "v1alpha2": ("policy.networking.k8s.io/v1alpha2", "Accept", "protocols", _v1alpha2_protocol),
}


def render(policy, version):
  """The Kubernetes object of `policy` in API `version`."""
  if policy.tier == "NetworkPolicy":
    return copy.deepcopy(policy.network_policy)
  api_version, allow, ports_key, port_shape = _SHAPES[version]
  if version == "v1alpha1":
    kind = "AdminNetworkPolicy" if policy.tier == "Admin" else "BaselineAdminNetworkPolicy"
    spec = {} if policy.tier == "Baseline" else {"priority": policy.priority}
  else:
    kind = "ClusterNetworkPolicy"
    spec = {"tier": policy.tier, "priority": policy.priority}
  spec["subject"] = _selector_subject(policy.subject)
  for direction, peers_key in (("ingress", "from"), ("egress", "to")):
    rules = getattr(policy, direction)
    if rules is None:
      continue
    out = []
    for r in rules:
      action = allow if r["action"] == "Allow" else r["action"]
      item = {"name": r["name"], "action": action, peers_key: [_peer(p) for p in r["peers"]]}
      if r["ports"]:
        item[ports_key] = [port_shape(p) for p in r["ports"]]
      out.append(item)
    spec[direction] = out
  return {"apiVersion": api_version, "kind": kind, "metadata": {"name": policy.name},
          "spec": spec}


# ---------------------------------------------------------------------------------------------
# Recording a test the way upstream runs it.


def probe(client, server, protocol, port_number, allowed):
  """kubernetes.PokeServer(client pod, server address, protocol, port, expect): the server is a
  pod (namespace/name) or, for a host-network server, its node's address."""
  return npgen.flow(client, server, protocol, port_number, allowed)


class Test(object):
  """One upstream ConformanceTest: the manifests it applies, then its t.Run steps in order.

  Mutations change the applied policies for every later step (upstream patches the live
  objects and never restores them within a test); each distinct state becomes one file."""

  def __init__(self, suite, slug, short_name, go_file, commit, policies, manifests, note=""):
    self.suite = suite  # Suite the files belong to
    self.slug = slug  # file name stem
    self.short_name = short_name  # upstream ConformanceTest.ShortName
    self.go_file = go_file  # conformance/tests/<go_file>
    self.commit = commit  # the stored version the steps were read from
    self.manifests = manifests  # [(manifest path, commit read)]
    self.note = note
    self.extra_objects = []  # manifest objects that are neither policies nor the base cluster
    self.policies = copy.deepcopy(list(policies))  # the live objects; mutations edit them
    self.mutations = []  # descriptions, in order
    # (policies, mutations so far, [(step number, t.Run name, probes)])
    self.states = [(copy.deepcopy(self.policies), [], [])]
    self.steps = 0
    suite.tests.append(self)

  def run(self, name, *probes):
    self.steps += 1
    self.states[-1][2].append((self.steps, name, list(probes)))

  def mutate(self, description, change):
    """change(policies by name) edits the live objects; `description` says what upstream did."""
    by_name = {p.name: p for p in self.policies}
    change(by_name)
    self.policies = [p for p in self.policies if p.name in by_name]
    self.mutations.append(description)
    self.states.append((copy.deepcopy(self.policies), list(self.mutations), []))

  # The mutations upstream's tests make.
  def swap(self, policy, direction, i, j, also=None):
    def change(by_name):
      for d in [direction] + ([also] if also else []):
        rules = getattr(by_name[policy], d)
        rules[i], rules[j] = rules[j], rules[i]
    both = " and %s" % also if also else ""
    self.mutate("swap %s rules %d and %d of %s%s" % (direction, i, j, policy, both), change)

  def set_action(self, policy, direction, i, action):
    def change(by_name):
      getattr(by_name[policy], direction)[i]["action"] = action
    self.mutate("%s[%d].action of %s = %s" % (direction, i, policy, action), change)

  def set_ports(self, policy, direction, i, ports, described):
    def change(by_name):
      getattr(by_name[policy], direction)[i]["ports"] = ports
    self.mutate("%s[%d] of %s: ports = %s" % (direction, i, policy, described), change)

  def set_priority(self, policy, priority):
    def change(by_name):
      by_name[policy].priority = priority
    self.mutate("priority of %s = %d" % (policy, priority), change)

  def prepend(self, policy, direction, new_rule):
    def change(by_name):
      getattr(by_name[policy], direction).insert(0, new_rule)
    self.mutate("insert %s rule %s at index 0 of %s" % (direction, new_rule["name"], policy),
                change)

  def delete(self, policy):
    def change(by_name):
      del by_name[policy]
    self.mutate("delete %s" % policy, change)


class Suite(object):
  """The files of one API version: their cluster and the tests transcribed into them."""

  def __init__(self, version, houses, manifests_note):
    self.version = version
    self.model, self.nodes = cluster(houses)
    self.manifests_note = manifests_note
    self.tests = []

  def files(self):
    """{file name: (header comment, documents)}: one file per state of a test that has steps."""
    out = {}
    for t in self.tests:
      states = [(k, s) for k, s in enumerate(t.states) if s[2]]
      for k, (policies, mutations, runs) in states:
        name = t.slug if len(states) == 1 else "%s-%d" % (t.slug, k)
        where = "%s conformance/tests/%s @%s" % (UPSTREAM, t.go_file, t.commit[:12])
        state = ""
        if len(t.states) > 1:
          state = ("state %d: after %s" % (k, "; ".join(mutations)) if mutations
                   else "state %d: the manifests as applied" % k)
        docs = []
        for number, run_name, probes in runs:
          source = '%s: %s t.Run("%s")' % (where, t.short_name, run_name)
          if state:
            source += " -- " + state
          # A flow from a pod to itself (the hairpin test) is judged like any other.
          self_flow = any(f["from"] == f["to"] for f in probes)
          docs.append(npgen.expectation("%s-step-%d" % (name, number), source, flows=probes,
                                        options={"alwaysAllowSelf": False} if self_flow else None))
        header = [
            "Generated by testdata/tiers/gen.py -- do not edit; edit gen.py and rerun.",
            "Test: %s (%s)" % (t.short_name, where),
            "Manifests: " + ", ".join("%s @%s" % (m, c[:12]) for m, c in t.manifests),
        ]
        if state:
          header.append(state[0].upper() + state[1:])
        if t.note:
          header.append(t.note)
        header.append("Cluster: " + self.manifests_note)
        objects = (self.model.documents() + self.nodes + t.extra_objects +
                   [render(p, self.version) for p in policies])
        out[name + ".yaml"] = ("\n".join(header), objects + docs)
    return out
