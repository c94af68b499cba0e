#!/usr/bin/python3 -B
"""Writes testdata/tiers/v1alpha1/*.yaml and testdata/tiers/v1alpha2/*.yaml: the conformance
suite of kubernetes-sigs/network-policy-api (AdminNetworkPolicy and BaselineAdminNetworkPolicy,
policy.networking.k8s.io/v1alpha1; ClusterNetworkPolicy, v1alpha2) with every connection its
tests expect to succeed or fail.

Each test below transcribes one upstream ConformanceTest: the manifests it applies (the policies,
as tiergen rules), its t.Run steps in order, and every kubernetes.PokeServer call of each step as
a probe(client, server, protocol, port, expected) -- the expected value is the last argument of
upstream's call, never computed. Mutations between steps (rule swaps, action, port and priority
changes, deletions) are the ones upstream's test makes; every distinct state is one file. The
upstream file and the commit of the stored version the steps were read from are given with each
test; README.md lists them and what was left out.

Usage: /usr/bin/python3 -B testdata/tiers/gen.py   (rewrites the YAML files below this directory)
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiergen import (HERE, SCTP, TCP, UDP, Policy, Suite, Test, house_label, house_ns,  # noqa: E402
                     named_port, namespaces, networks, node_ipv4, nodes, pod, pod_name, pods,
                     port, port_range, probe, rule)
import npgen  # noqa: E402  (tiergen put ../upstream on the path)

# Pods (StatefulSet replica k of each house).
def G(k): return pod("gryffindor", "harry-potter-%d" % k)  # noqa: E302,E704
def S(k): return pod("slytherin", "draco-malfoy-%d" % k)  # noqa: E302,E704
def H(k): return pod("hufflepuff", "cedric-diggory-%d" % k)  # noqa: E302,E704
def R(k): return pod("ravenclaw", "luna-lovegood-%d" % k)  # noqa: E302,E704
def DUMBLEDORE(k): return pod("hogwarts-staff", "professor-dumbledore-%d" % k)  # noqa: E302,E704
def QUIRRELL(k): return pod("hogwarts-staff", "professor-quirrell-%d" % k)  # noqa: E302,E704


# centaur-1 is a host-network pod on node-2: upstream pokes serverPod.Status.PodIP, the node's.
CENTAUR_1 = node_ipv4("node-2")
STAFF = "hogwarts-staff"


def allowed(*args):
  return probe(*args, True)


def denied(*args):
  return probe(*args, False)


def step_name(verb, direction, protocol, at_port):
  """The t.Run names of the protocol tests, e.g. "Should support a 'deny-egress' policy for UDP
  protocol at the specified port"."""
  article = "an" if (verb == "allow" or not at_port) else "a"
  what = "at the specified port" if at_port else "; ensure rule ordering is respected"
  return "Should support %s '%s-%s' policy for %s protocol%s%s" % (
      article, verb, direction, protocol, "" if not at_port else " ", what)


def house_rules(tier, direction, everything, at_port, port_number, allowed_house, allowed_port,
                protocol):
  """The rule list every protocol test's manifest uses: Allow, Deny (and in the admin tier Pass)
  of all traffic with one house; Deny (and Pass) of one port with a second house; Allow of one
  port, then Deny of the rest, with a third."""
  w = "from" if direction == "ingress" else "to"
  out = [rule("allow-%s-%s-everything" % (w, everything), "Allow", [namespaces(house_ns(everything))]),
         rule("deny-%s-%s-everything" % (w, everything), "Deny", [namespaces(house_ns(everything))])]
  if tier == "Admin":
    out.append(rule("pass-%s-%s-everything" % (w, everything), "Pass",
                    [namespaces(house_ns(everything))]))
  verbs = ["deny", "pass"] if tier == "Admin" else ["deny"]
  for verb in verbs:
    out.append(rule("%s-%s-%s-at-port-%d" % (verb, w, at_port, port_number), verb.capitalize(),
                    [namespaces(house_ns(at_port))], [port(protocol, port_number)]))
  out.append(rule("allow-%s-%s-at-port-%d" % (w, allowed_house, allowed_port), "Allow",
                  [namespaces(house_ns(allowed_house))], [port(protocol, allowed_port)]))
  out.append(rule("deny-%s-%s-everything-else" % (w, allowed_house), "Deny",
                  [namespaces(house_ns(allowed_house))]))
  return out


def staff(name, action, stateful_set_pod, *ports):
  """A v1alpha1 rule about one hogwarts-staff pod (pods: namespace AND pod-name label)."""
  return rule(name, action, [pods(house_ns(STAFF), pod_name(stateful_set_pod))], list(ports) or None)


# Each protocol test: (tier, direction, protocol, subject house, the house_rules arguments,
# the policy's name and admin-tier priority).
PROTOCOL_POLICIES = {
    ("Admin", "ingress", TCP): ("ingress-tcp", 3, "gryffindor", ("ravenclaw", "slytherin", 80, "hufflepuff", 80)),
    ("Admin", "egress", TCP): ("egress-tcp", 6, "gryffindor", ("ravenclaw", "slytherin", 80, "hufflepuff", 8080)),
    ("Admin", "ingress", UDP): ("ingress-udp", 4, "hufflepuff", ("ravenclaw", "slytherin", 5353, "gryffindor", 53)),
    ("Admin", "egress", UDP): ("egress-udp", 7, "hufflepuff", ("ravenclaw", "slytherin", 5353, "gryffindor", 53)),
    ("Admin", "ingress", SCTP): ("ingress-sctp", 5, "ravenclaw", ("gryffindor", "slytherin", 9003, "hufflepuff", 9003)),
    ("Admin", "egress", SCTP): ("egress-sctp", 8, "ravenclaw", ("gryffindor", "slytherin", 9003, "hufflepuff", 9003)),
}
for (_, _d, _p), _v in list(PROTOCOL_POLICIES.items()):
  PROTOCOL_POLICIES[("Baseline", _d, _p)] = ("default", 10) + _v[2:]


def protocol_policy(tier, direction, protocol, extra_rules=()):
  name, priority, subject, args = PROTOCOL_POLICIES[(tier, direction, protocol)]
  rules = house_rules(tier, direction, *args, protocol) + list(extra_rules)
  return Policy(name, tier, priority, namespaces(house_ns(subject)), **{direction: rules})


# ---------------------------------------------------------------------------------------------
# The protocol tests' steps. `servers`/`clients` are the pods upstream pokes, in its order; the
# expectations are the booleans of upstream's PokeServer calls.


def admin_protocol_steps(t, policy, direction, protocol, probes, not_affect=None):
  """The six steps of an admin-tier protocol test (allow, allow at port, deny after swapping
  rules 0 and 1, deny at port, pass after swapping 0 and 2, pass at port after swapping 3 and 4).
  probes: the six steps' PokeServer calls; not_affect: the step v1alpha2 adds after step 2."""
  t.run(step_name("allow", direction, protocol, False), *probes[0])
  t.run(step_name("allow", direction, protocol, True), *probes[1])
  if not_affect:
    t.run(*not_affect)
  t.swap(policy, direction, 0, 1)
  t.run(step_name("deny", direction, protocol, False), *probes[2])
  t.run(step_name("deny", direction, protocol, True), *probes[3])
  t.swap(policy, direction, 0, 2)
  t.run(step_name("pass", direction, protocol, False), *probes[4])
  t.swap(policy, direction, 3, 4)
  t.run(step_name("pass", direction, protocol, True), *probes[5])


def baseline_protocol_steps(t, direction, protocol, probes, not_affect=None):
  """The four steps of a baseline-tier protocol test (no Pass action in that tier)."""
  t.run(step_name("allow", direction, protocol, False), *probes[0])
  t.run(step_name("allow", direction, protocol, True), *probes[1])
  if not_affect:
    t.run(*not_affect)
  t.swap("default", direction, 0, 1)
  t.run(step_name("deny", direction, protocol, False), *probes[2])
  t.run(step_name("deny", direction, protocol, True), *probes[3])


# The PokeServer calls of each protocol test, step by step (identical in the v1alpha1 and
# v1alpha2 versions of the tests read; the v1alpha1 ingress SCTP test adds two probes to step 1).
ADMIN_PROBES = {
    ("ingress", TCP): [
        [allowed(R(0), G(0), TCP, 80), allowed(R(1), G(0), TCP, 8080)],
        [allowed(H(0), G(1), TCP, 80), denied(H(1), G(1), TCP, 8080)],
        [denied(R(0), G(1), TCP, 80), denied(R(1), G(1), TCP, 8080)],
        [denied(S(0), G(0), TCP, 80), allowed(S(1), G(0), TCP, 8080)],
        [allowed(R(0), G(0), TCP, 80), allowed(R(1), G(0), TCP, 8080)],
        [allowed(S(0), G(0), TCP, 80), allowed(S(1), G(0), TCP, 8080)]],
    ("egress", TCP): [
        [allowed(G(0), R(0), TCP, 80), allowed(G(1), R(0), TCP, 8080)],
        [allowed(G(0), H(1), TCP, 8080), denied(G(1), H(1), TCP, 80)],
        [denied(G(0), R(1), TCP, 80), denied(G(1), R(1), TCP, 8080)],
        [denied(G(0), S(0), TCP, 80), allowed(G(1), S(0), TCP, 8080)],
        [allowed(G(0), R(0), TCP, 80), allowed(G(1), R(0), TCP, 8080)],
        [allowed(G(0), S(0), TCP, 80), allowed(G(1), S(0), TCP, 8080)]],
    ("ingress", UDP): [
        [allowed(R(0), H(0), UDP, 53), allowed(R(1), H(0), UDP, 5353)],
        [allowed(G(0), H(1), UDP, 53), denied(G(1), H(1), UDP, 5353)],
        [denied(R(0), H(1), UDP, 53), denied(R(1), H(1), UDP, 5353)],
        [denied(S(0), H(0), UDP, 5353), allowed(S(1), H(0), UDP, 53)],
        [allowed(R(0), H(1), UDP, 5353), allowed(R(1), H(1), UDP, 53)],
        [allowed(S(0), H(0), UDP, 5353), allowed(S(1), H(0), UDP, 53)]],
    ("egress", UDP): [
        [allowed(H(0), R(0), UDP, 53), allowed(H(1), R(0), UDP, 5353)],
        [allowed(H(0), G(1), UDP, 53), denied(H(1), G(1), UDP, 5353)],
        [denied(H(0), R(1), UDP, 53), denied(H(1), R(1), UDP, 5353)],
        [denied(H(0), S(0), UDP, 5353), allowed(H(1), S(0), UDP, 53)],
        [allowed(H(0), R(1), UDP, 5353), allowed(H(1), R(1), UDP, 53)],
        [allowed(H(0), S(0), UDP, 5353), allowed(H(1), S(0), UDP, 53)]],
    ("ingress", SCTP): [
        [allowed(G(0), R(0), SCTP, 9003), allowed(G(1), R(0), SCTP, 9005)],
        [allowed(H(0), R(1), SCTP, 9003), denied(H(1), R(1), SCTP, 9005)],
        [denied(G(0), R(1), SCTP, 9003), denied(G(1), R(1), SCTP, 9005)],
        [denied(S(0), R(0), SCTP, 9003), allowed(S(1), R(0), SCTP, 9005)],
        [allowed(G(0), R(1), SCTP, 9003), allowed(G(1), R(1), SCTP, 9005)],
        [allowed(S(0), R(0), SCTP, 9003), allowed(S(1), R(0), SCTP, 9005)]],
    ("egress", SCTP): [
        [allowed(R(0), G(0), SCTP, 9003), allowed(R(1), G(0), SCTP, 9005)],
        [allowed(R(0), H(1), SCTP, 9003), denied(R(1), H(1), SCTP, 9005)],
        [denied(R(0), G(1), SCTP, 9003), denied(R(1), G(1), SCTP, 9005)],
        [denied(R(0), S(0), SCTP, 9003), allowed(R(1), S(0), SCTP, 9005)],
        [allowed(R(0), G(1), SCTP, 9003), allowed(R(1), G(1), SCTP, 9005)],
        [allowed(R(0), S(0), SCTP, 9003), allowed(R(1), S(0), SCTP, 9005)]],
}
BASELINE_PROBES = {  # the admin-tier steps without the two Pass steps
    key: probes[:4] for key, probes in ADMIN_PROBES.items()}

# v1alpha2 (2491831): the TCP tests check, before any swap, that the other direction is open.
NOT_AFFECT = {
    "ingress": ("Should not affect egress traffic when only ingress rules are specified",
                allowed(G(0), R(0), TCP, 80), allowed(G(1), S(0), TCP, 80)),
    "egress": ("Should not affect ingress traffic when only egress rules are specified",
               allowed(R(0), G(0), TCP, 80), allowed(S(0), G(1), TCP, 80)),
}


# ---------------------------------------------------------------------------------------------
# The combined ("gress"), priority and integration tests: the same steps in both versions.

GRESS_STEPS = [  # (t.Run name, PokeServer calls)
    ("Should support an 'allow-gress' policy across different protocols", [
        allowed(G(0), R(0), TCP, 80), allowed(G(1), R(0), UDP, 53), allowed(G(0), R(0), SCTP, 9003),
        allowed(R(0), G(0), TCP, 80), allowed(R(1), G(0), UDP, 53), allowed(R(1), G(0), SCTP, 9003)]),
    ("Should support an 'allow-gress' policy across different protocols at the specified ports", [
        allowed(G(0), H(1), TCP, 8080), denied(G(1), H(1), TCP, 80),
        allowed(G(0), H(1), UDP, 5353), denied(G(1), H(1), UDP, 53),
        allowed(G(0), H(1), SCTP, 9003), denied(G(1), H(1), SCTP, 9005),
        allowed(H(0), G(1), TCP, 80), denied(H(1), G(1), TCP, 8080),
        allowed(H(0), G(1), UDP, 5353), denied(H(1), G(1), UDP, 53),
        allowed(H(0), G(1), SCTP, 9003), denied(H(1), G(1), SCTP, 9005)]),
    ("Should support an 'deny-gress' policy across different protocols", [
        denied(G(0), R(1), TCP, 80), denied(G(1), R(1), UDP, 53), denied(G(0), R(1), SCTP, 9003),
        denied(R(0), G(1), TCP, 80), denied(R(1), G(1), UDP, 53), denied(R(1), G(1), SCTP, 9003)]),
    ("Should support a 'deny-gress' policy across different protocols at the specified ports", [
        denied(G(0), S(0), TCP, 80), allowed(G(1), S(0), TCP, 8080),
        denied(G(0), S(0), UDP, 53), allowed(G(1), S(0), UDP, 5353),
        denied(G(0), S(0), SCTP, 9003), allowed(G(1), S(0), SCTP, 9005),
        denied(S(0), G(0), TCP, 80), allowed(S(1), G(0), TCP, 8080),
        denied(S(0), G(0), UDP, 53), allowed(S(1), G(0), UDP, 5353),
        denied(S(0), G(0), SCTP, 9003), allowed(S(1), G(0), SCTP, 9005)]),
    ("Should support an 'pass-gress' policy across different protocols", [
        allowed(G(0), R(0), TCP, 80), allowed(G(0), R(0), UDP, 5353), allowed(G(0), R(0), SCTP, 9003),
        allowed(R(0), G(0), TCP, 80), allowed(R(1), G(0), UDP, 53), allowed(R(1), G(0), SCTP, 9003)]),
    ("Should support a 'pass-gress' policy across different protocols at the specified ports", [
        allowed(G(0), S(0), TCP, 80), allowed(G(1), S(0), TCP, 8080),
        allowed(G(0), S(0), UDP, 53), allowed(G(1), S(0), UDP, 5353),
        allowed(G(0), S(0), SCTP, 9003), allowed(G(1), S(0), SCTP, 9005),
        allowed(S(0), G(0), TCP, 80), allowed(S(1), G(0), TCP, 8080),
        allowed(S(0), G(0), UDP, 53), allowed(S(1), G(0), UDP, 5353),
        allowed(S(0), G(0), SCTP, 9003), allowed(S(1), G(0), SCTP, 9005)]),
]


def gress_policy(tier, name, priority, allow_to_huff_name):
  """gress-rules (admin tier) / default (baseline tier): the protocol tests' rules for both
  directions, each port rule naming one TCP, one UDP and one SCTP port."""
  def side(direction, w, huff_ports, huff_name):
    out = [rule("allow-%s-ravenclaw-everything" % w, "Allow", [namespaces(house_ns("ravenclaw"))]),
           rule("deny-%s-ravenclaw-everything" % w, "Deny", [namespaces(house_ns("ravenclaw"))])]
    if tier == "Admin":
      out.append(rule("pass-%s-ravenclaw-everything" % w, "Pass", [namespaces(house_ns("ravenclaw"))]))
    sly = [port(TCP, 80), port(UDP, 53), port(SCTP, 9003)]
    plural = "ports" if direction == "egress" else "port"
    out.append(rule("deny-%s-slytherin-at-%s-80-53-9003" % (w, plural), "Deny",
                    [namespaces(house_ns("slytherin"))], sly))
    if tier == "Admin":
      out.append(rule("pass-%s-slytherin-at-port-80-53-9003" % w, "Pass",
                      [namespaces(house_ns("slytherin"))], sly))
    out.append(rule(huff_name, "Allow", [namespaces(house_ns("hufflepuff"))], huff_ports))
    out.append(rule("deny-%s-hufflepuff-everything-else" % w, "Deny",
                    [namespaces(house_ns("hufflepuff"))]))
    return out
  return Policy(name, tier, priority, namespaces(house_ns("gryffindor")),
                ingress=side("ingress", "from", [port(TCP, 80), port(UDP, 5353), port(SCTP, 9003)],
                             "allow-from-hufflepuff-at-port-80-5353-9003"),
                egress=side("egress", "to", [port(TCP, 8080), port(UDP, 5353), port(SCTP, 9003)],
                            allow_to_huff_name))


def gress_steps(t, policy, tier):
  for i, (name, probes) in enumerate(GRESS_STEPS):
    if i == 2:
      t.swap(policy, "egress", 0, 1, also="ingress")
    if i == 4:
      if tier == "Baseline":
        return  # the baseline-tier test has no Pass steps
      t.swap(policy, "egress", 0, 2, also="ingress")
    if i == 5:
      t.swap(policy, "egress", 3, 4, also="ingress")
    t.run(name, *probes)


GRYFFINDOR_PODS = pods(house_label("gryffindor"), house_label("gryffindor"))
SLYTHERIN_PODS = pods(house_label("slytherin"), house_label("slytherin"))


def priority_policies(baseline_priority):
  """base/.../priority-field.yaml: an admin Deny at 50, an admin Pass at 60 (the test moves it to
  40) and a baseline Allow, all about slytherin's pods, for gryffindor's pods."""
  def both(verb, action):
    return dict(ingress=[rule("%s-all-ingress-from-slytherin" % verb, action, [SLYTHERIN_PODS])],
                egress=[rule("%s-all-egress-to-slytherin" % verb, action, [SLYTHERIN_PODS])])
  return [Policy("priority-50-example", "Admin", 50, GRYFFINDOR_PODS, **both("deny", "Deny")),
          Policy("old-priority-60-new-priority-40-example", "Admin", 60, GRYFFINDOR_PODS,
                 **both("pass", "Pass")),
          Policy("default", "Baseline", baseline_priority, GRYFFINDOR_PODS, **both("allow", "Allow"))]


SLYTHERIN_IN = [allowed(S(0), G(0), TCP, 80), allowed(S(1), G(0), TCP, 8080)]
SLYTHERIN_OUT = [allowed(G(0), S(0), TCP, 80), allowed(G(1), S(0), TCP, 8080)]


def flip(probes):
  return [probe(f["from"], f["to"], f["protocol"], f["port"], not f["allowed"]) for f in probes]


def priority_steps(t, admin, baseline):
  t.run("Should Deny traffic from slytherin to gryffindor respecting %s" % admin, *flip(SLYTHERIN_IN))
  t.run("Should Deny traffic to slytherin from gryffindor respecting %s" % admin, *flip(SLYTHERIN_OUT))
  t.set_priority("old-priority-60-new-priority-40-example", 40)
  t.run("Should respect %s priority field; thus passing both ingress and egress traffic over to %s"
        % (admin, baseline), *(SLYTHERIN_IN + SLYTHERIN_OUT))


def integration_policies(baseline_priority):
  """base/api_integration/*-anp-np-banp.yaml: an admin Deny both ways with slytherin (the test
  turns it into Pass), a NetworkPolicy in gryffindor allowing slytherin both ways, a baseline
  Deny both ways."""
  def both(action):
    return dict(ingress=[rule("deny-all-ingress-from-slytherin", action,
                              [namespaces(house_label("slytherin"))])],
                egress=[rule("deny-all-egress-to-slytherin", action,
                             [namespaces(house_label("slytherin"))])])
  slytherin = [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]
  np_object = {  # upstream writes `podSelector:` with no value; the API server stores {}
      "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "allow-gress-from-to-slytherin-to-gryffindor",
                   "namespace": "network-policy-conformance-gryffindor"},
      "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": slytherin}], "egress": [{"to": slytherin}]}}
  subject = namespaces(house_label("gryffindor"))
  return [Policy("pass-example", "Admin", 10, subject, **both("Deny")),
          Policy("allow-gress-from-to-slytherin-to-gryffindor", "NetworkPolicy",
                 network_policy=np_object),
          Policy("default", "Baseline", baseline_priority, subject, **both("Deny"))]


def integration_steps(t, admin, baseline):
  t.run("Should Deny traffic from slytherin to gryffindor respecting %s" % admin, *flip(SLYTHERIN_IN))
  t.run("Should Deny traffic to slytherin from gryffindor respecting %s" % admin, *flip(SLYTHERIN_OUT))
  t.set_action("pass-example", "ingress", 0, "Pass")
  t.run("Should support a 'pass-ingress' policy for %s and respect the match for network policy"
        % admin, *SLYTHERIN_IN)
  t.set_action("pass-example", "egress", 0, "Pass")
  t.run("Should support a 'pass-egress' policy for %s and respect the match for network policy"
        % admin, *SLYTHERIN_OUT)
  t.delete("allow-gress-from-to-slytherin-to-gryffindor")
  t.run("Should support a 'pass-ingress' policy for %s and respect the match for %s"
        % (admin, baseline), *flip(SLYTHERIN_IN))
  t.run("Should support a 'pass-egress' policy for %s and respect the match for %s"
        % (admin, baseline), *flip(SLYTHERIN_OUT))


def inline_cidr_steps(t, policy, allow, model, full=True):
  """The egress CIDR-peer test: networks 0.0.0.0/0 and ::/0 are denied after slytherin's pods
  are allowed; then an Allow of two pods' /32s is inserted first."""
  def three(client, server, expect):
    return [probe(client, server, proto, p, expect)
            for proto, p in ((TCP, 80), (UDP, 53), (SCTP, 9003))]
  first = three(G(1), R(0), False) + three(G(1), H(0), False)
  if full:  # the later versions also probe slytherin, which the first rule allows
    first += three(G(1), S(0), True)
  t.run("Should support a 'deny-egress' rule policy for egress-cidr-peer", *first)
  # upstream: mask /32 for an IPv4 status.podIP (ours is IPv4), /128 otherwise
  cidrs = [model.ip(R(0)) + "/32", model.ip(H(0)) + "/32"]
  t.prepend(policy, "egress", rule("allow-egress-to-specific-podIPs", allow, [networks(*cidrs)]))
  second = three(G(1), R(0), True) + three(G(1), H(0), True)
  if full:  # ... and that the other pods of those namespaces stay denied
    second += three(G(1), R(1), False) + three(G(1), H(1), False)
  t.run("Should support an 'allow-egress' rule policy for egress-cidr-peer", *second)


def named_port_test(suite, slug, short_name, go_file, commit, policy, manifest, direction, index,
                    name, probes):
  """A named-port test: rule `index` of a protocol test's policy gets a named port instead."""
  t = Test(suite, slug, short_name, go_file, commit, [policy], [manifest])
  t.set_ports(policy.name, direction, index, [named_port(name)], "[named port %s]" % name)
  t.run("Should support an 'allow-%s' policy for named port" % direction, *probes)


# ---------------------------------------------------------------------------------------------
# v1alpha1: AdminNetworkPolicy and BaselineAdminNetworkPolicy ("core"/"extended" suite).

V1ALPHA1 = Suite("v1alpha1",
                 ["gryffindor", "slytherin", "hufflepuff", "ravenclaw", "forbidden-forrest",
                  STAFF],
                 "conformance/base/manifests.yaml (@4d5b6932 for hogwarts-staff, @d48faeeb for "
                 "forbidden-forrest; the four houses are the same in both); see README.md.")
A = "admin-network-policy-core-%s-rules.go"
B = "baseline-admin-network-policy-core-%s-rules.go"
ANP_YAML = "base/admin_network_policy/core-%s-rules.yaml"
BANP_YAML = "base/baseline_admin_network_policy/core-%s-rules.yaml"
C_107F = "107f154e1aef56bb061665d1bc5b4f1cb427bd1c"  # the commit that added hogwarts-staff tests
C_4D5B = "4d5b6932bf8ccda677b9aa171070fe426ab52c40"  # ... and its manifests and policies
C_774 = "774376b17a86ea0a4ebbd640aedab2ec000d2816"
C_232 = "23200e4d0381788897d764671302f49c5c9cacee"
C_135 = "135bf4bf87068173336ca236f413c1eaf0a4f6b9"

# The staff rules each v1alpha1 manifest adds after the house rules.
V1ALPHA1_STAFF_RULES = {
    ("Admin", "ingress", TCP): [
        staff("deny-from-professor-quirrell-at-port-8080", "Deny", "professor-quirrell-0", port(TCP, 8080)),
        staff("allow-from-professor-dumbledore-at-port-8080", "Allow", "professor-dumbledore-0", port(TCP, 8080)),
        staff("deny-from-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Admin", "egress", TCP): [
        staff("deny-to-professor-quirrell-at-port-8080", "Deny", "professor-quirrell-0", port(TCP, 8080)),
        staff("allow-to-professor-dumbledore-at-port-8080", "Allow", "professor-dumbledore-0", port(TCP, 8080)),
        staff("deny-to-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Admin", "ingress", UDP): [
        staff("deny-from-professor-quirrell-port-53", "Deny", "professor-quirrell-0", port(UDP, 53)),
        staff("deny-from-professor-quirrell-port-5353", "Deny", "professor-quirrell-1", port(UDP, 5353)),
        staff("allow-from-professor-dumbledore-at-ports-53", "Allow", "professor-dumbledore-0", port(UDP, 53)),
        staff("allow-from-professor-dumbledore-at-ports-5353", "Allow", "professor-dumbledore-1", port(UDP, 5353)),
        staff("deny-from-dumbledore-everything-else", "Deny", "professor-dumbledore-0"),
        staff("deny-from-dumbledore-everything-else", "Deny", "professor-dumbledore-1")],
    ("Admin", "egress", UDP): [
        staff("deny-to-professor-quirrell-at-port-53", "Deny", "professor-quirrell-0", port(UDP, 53)),
        # upstream names this rule like the previous one
        staff("deny-to-professor-quirrell-at-port-53", "Deny", "professor-quirrell-0", port(UDP, 5353)),
        staff("allow-to-professor-dumbledore-at-port-53", "Allow", "professor-dumbledore-0", port(UDP, 53)),
        staff("allow-to-professor-dumbledore-at-port-5353", "Allow", "professor-dumbledore-0", port(UDP, 5353)),
        staff("deny-to-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Admin", "ingress", SCTP): [
        staff("deny-from-professor-quirrell-at-ports-9003", "Deny", "professor-quirrell-0", port(SCTP, 9003)),
        staff("allow-from-professor-dumbledore-at-ports-9003", "Allow", "professor-dumbledore-0", port(SCTP, 9003)),
        staff("deny-from-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Admin", "egress", SCTP): [
        staff("deny-to-professor-quirrell-everything", "Deny", "professor-quirrell-0"),
        staff("allow-to-professor-dumbledore", "Allow", "professor-dumbledore-0", port(SCTP, 9003)),
        staff("allow-to-professor-dumbledore", "Allow", "professor-dumbledore-0", port(SCTP, 9005)),
        staff("deny-to-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Baseline", "ingress", TCP): [
        staff("deny-professor-quirrell-at-80", "Deny", "professor-quirrell-0", port(TCP, 80)),
        staff("allow-professor-dumbledore-at-80", "Allow", "professor-dumbledore-0", port(TCP, 80))],
    ("Baseline", "egress", TCP): [
        staff("deny-to-professor-quirrell", "Deny", "professor-quirrell-0", port(TCP, 80)),
        staff("allow-to-professor-dumbledore", "Allow", "professor-dumbledore-0", port(TCP, 80))],
    ("Baseline", "ingress", UDP): [
        staff("deny-from-professor-quirrell-at-53", "Deny", "professor-quirrell-0", port(UDP, 53)),
        staff("allow-from-professor-dumbledore-at-80", "Allow", "professor-dumbledore-0", port(UDP, 53))],
    ("Baseline", "egress", UDP): [
        staff("deny-to-professor-quirrell", "Deny", "professor-quirrell-0", port(UDP, 53)),
        staff("allow-to-professor-dumbledore", "Allow", "professor-dumbledore-0", port(UDP, 53))],
    ("Baseline", "ingress", SCTP): [
        staff("deny-from-professor-quirrell-at-port-8080", "Deny", "professor-quirrell-0", port(SCTP, 9003)),
        staff("allow-from-professor-dumbledore-at-port-8080", "Allow", "professor-dumbledore-0", port(SCTP, 9003)),
        staff("deny-from-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
    ("Baseline", "egress", SCTP): [
        staff("deny-to-professor-quirrell-at-port-9003", "Deny", "professor-quirrell-0", port(SCTP, 9003)),
        staff("allow-to-professor-dumbledore", "Allow", "professor-dumbledore-0", port(SCTP, 9003)),
        staff("deny-to-dumbledore-everything-else", "Deny", "professor-dumbledore-0")],
}

# Where each v1alpha1 manifest was read.
V1ALPHA1_MANIFEST_COMMITS = {
    ("Admin", "ingress", TCP): C_4D5B, ("Admin", "egress", TCP): C_107F,
    ("Admin", "ingress", UDP): C_107F, ("Admin", "egress", UDP): C_4D5B,
    ("Admin", "ingress", SCTP): C_107F, ("Admin", "egress", SCTP): C_4D5B,
    ("Baseline", "ingress", TCP): C_4D5B, ("Baseline", "egress", TCP): C_107F,
    ("Baseline", "ingress", UDP): C_4D5B, ("Baseline", "egress", UDP): C_4D5B,
    ("Baseline", "ingress", SCTP): C_4D5B, ("Baseline", "egress", SCTP): C_4D5B,
}


def v1alpha1_policy(tier, direction, protocol):
  key = (tier, direction, protocol)
  yaml = (ANP_YAML if tier == "Admin" else BANP_YAML) % ("%s-%s" % (direction, protocol.lower()))
  return (protocol_policy(tier, direction, protocol, V1ALPHA1_STAFF_RULES[key]),
          (yaml, V1ALPHA1_MANIFEST_COMMITS[key]))


def v1alpha1_protocol_test(tier, direction, protocol, commit, extra_first_step=()):
  kind = "AdminNetworkPolicy" if tier == "Admin" else "BaselineAdminNetworkPolicy"
  short = "%s%s%s" % (kind, direction.capitalize(), protocol)
  policy, manifest = v1alpha1_policy(tier, direction, protocol)
  go_file = (A if tier == "Admin" else B) % ("%s-%s" % (direction, protocol.lower()))
  slug = "%s-%s-%s" % ("anp" if tier == "Admin" else "banp", direction, protocol.lower())
  t = Test(V1ALPHA1, slug, short, go_file, commit, [policy], [manifest])
  if tier == "Admin":
    probes = [list(p) for p in ADMIN_PROBES[(direction, protocol)]]
    probes[0] += list(extra_first_step)
    admin_protocol_steps(t, policy.name, direction, protocol, probes)
  else:
    baseline_protocol_steps(t, direction, protocol, BASELINE_PROBES[(direction, protocol)])
  return t


def v1alpha1_pod_selector_test(tier, direction, protocol, commit, short, runs, go_protocol=None):
  """The hogwarts-staff tests: the protocol test's manifest, probed from or to one staff pod."""
  policy, manifest = v1alpha1_policy(tier, direction, protocol)
  go_file = (A if tier == "Admin" else B) % ("%s-%s" % (direction, (go_protocol or protocol).lower()))
  slug = "%s-%s-pod-selector-%s" % ("anp" if tier == "Admin" else "banp", direction, protocol.lower())
  t = Test(V1ALPHA1, slug, short, go_file, commit, [policy], [manifest])
  for name, probes in runs:
    t.run(name, *probes)


# AdminNetworkPolicy protocol tests.
v1alpha1_protocol_test("Admin", "ingress", TCP, C_107F)
v1alpha1_protocol_test("Admin", "egress", TCP, "8c46a567512e2ede4511f6e6a266c8e3290bc66e")
v1alpha1_protocol_test("Admin", "ingress", UDP, C_135)
v1alpha1_protocol_test("Admin", "egress", UDP, C_107F)
# @107f154e the first step of the ingress SCTP test also pokes luna-lovegood-0 from dumbledore.
v1alpha1_protocol_test("Admin", "ingress", SCTP, C_107F, extra_first_step=[
    allowed(DUMBLEDORE(0), R(0), SCTP, 9003), denied(DUMBLEDORE(0), R(0), TCP, 80)])
v1alpha1_protocol_test("Admin", "egress", SCTP, C_232)

v1alpha1_pod_selector_test("Admin", "ingress", TCP, C_107F, "AdminNetworkPolicyIngressPodSelectorTCP", [
    ("Should support an 'allow-ingress' policy for TCP protocol at the specified pod",
     [allowed(DUMBLEDORE(0), G(0), TCP, 8080)]),
    ("Should support a 'deny-ingress' policy for TCP protocol at the specified pod",
     [denied(QUIRRELL(0), G(0), TCP, 8080)])])
v1alpha1_pod_selector_test("Admin", "egress", UDP, C_107F, "AdminNetworkPolicyEgressPodSelectorUDP", [
    ("Should support a 'deny-egress' policy for UDP protocol at the specified pod",
     [denied(H(0), QUIRRELL(0), UDP, 53), denied(H(0), QUIRRELL(0), UDP, 5353)]),
    ("Should support an 'allow-egress' policy for UDP protocol at the specified pod",
     [allowed(H(0), DUMBLEDORE(0), UDP, 53), allowed(H(0), DUMBLEDORE(0), UDP, 5353)])])
v1alpha1_pod_selector_test("Admin", "ingress", SCTP, C_107F, "AdminNetworkPolicyIngressPodSelector", [
    ("Should support an 'allow-ingress' policy for the specified pod (SCTP)",
     [allowed(DUMBLEDORE(0), R(0), SCTP, 9003), denied(DUMBLEDORE(0), R(0), TCP, 80)]),
    ("Should support an 'deny-ingress' policy for the specified pod (SCTP)",
     [denied(QUIRRELL(0), R(0), SCTP, 9003), allowed(QUIRRELL(0), R(0), TCP, 80)])])

# BaselineAdminNetworkPolicy protocol tests.
v1alpha1_protocol_test("Baseline", "ingress", TCP, C_107F)
v1alpha1_protocol_test("Baseline", "egress", TCP, C_107F)
v1alpha1_protocol_test("Baseline", "ingress", UDP, C_107F)
v1alpha1_protocol_test("Baseline", "egress", UDP, C_107F)
v1alpha1_protocol_test("Baseline", "ingress", SCTP, C_232)
v1alpha1_protocol_test("Baseline", "egress", SCTP, C_774)

v1alpha1_pod_selector_test("Baseline", "ingress", TCP, C_107F, "BaselineAdminNetworkPolicyIngressPodSelectorTCP", [
    ("Should support an 'allow-ingress' policy for TCP protocol at the specified pod",
     [allowed(DUMBLEDORE(0), G(1), TCP, 8080)]),
    ("Should support an 'deny-ingress' policy for TCP protocol at the specified pod",
     [denied(QUIRRELL(0), G(1), TCP, 80), allowed(QUIRRELL(0), G(1), TCP, 8080)])])
v1alpha1_pod_selector_test("Baseline", "egress", TCP, C_107F, "BaselineAdminNetworkPolicyEgressPodSelectorTCP", [
    ("Should support an 'allow-egress' policy for TCP protocol at the specified pod",
     [allowed(G(0), DUMBLEDORE(0), TCP, 80)]),
    ("Should support a 'deny-egress' policy for TCP protocol at the specified pod",
     [denied(G(0), QUIRRELL(0), TCP, 80)])])
v1alpha1_pod_selector_test("Baseline", "ingress", UDP, C_107F, "BaselineAdminNetworkPolicyIngressPodSelectorUDP", [
    ("Should support an 'allow-ingress' policy for UDP protocol at the specified pod",
     [allowed(DUMBLEDORE(0), H(0), UDP, 53)]),
    ("Should support a 'deny-ingress' policy for UDP protocol at the specified pod",
     [denied(QUIRRELL(0), H(0), UDP, 53)])])
v1alpha1_pod_selector_test("Baseline", "egress", UDP, C_107F, "BaselineAdminNetworkPolicyEgressPodSelectorUDP", [
    ("Should support an 'deny-egress' policy for UDP protocol at the specified pod",
     [denied(H(0), QUIRRELL(0), UDP, 53)]),
    # upstream's name says SCTP; the client is in ravenclaw, which the policy's subject is not
    ("Should support an 'allow-egress' policy for SCTP protocol at the specified pod",
     [allowed(R(0), DUMBLEDORE(0), UDP, 53)])])

# Named ports (extended features): the protocol tests' manifests, one rule rewritten.
named_port_test(V1ALPHA1, "anp-egress-named-port", "AdminNetworkPolicyEgressNamedPort",
                "admin-network-policy-extended-egress-rules.go",
                "0668b2f7a7c91f65b18c9ad9c2ecba0c133d35fe", *v1alpha1_policy("Admin", "egress", TCP),
                "egress", 5, "web", [allowed(G(0), H(1), TCP, 80), denied(G(1), H(1), TCP, 8080)])
named_port_test(V1ALPHA1, "anp-ingress-named-port", "AdminNetworkPolicyIngressNamedPort",
                "admin-network-policy-extended-ingress-rules.go", C_135,
                *v1alpha1_policy("Admin", "ingress", UDP),
                "ingress", 5, "dns", [allowed(G(0), H(1), UDP, 53), denied(G(1), H(1), UDP, 5353)])
# Also in baseline-admin-network-policy-extended-ingress-rules.go @135bf4bf, unchanged.
named_port_test(V1ALPHA1, "banp-ingress-named-port", "BaselineAdminNetworkPolicyIngressNamedPort",
                B % "ingress-tcp", C_107F, *v1alpha1_policy("Baseline", "ingress", TCP),
                "ingress", 3, "web", [allowed(H(0), G(1), TCP, 80), denied(H(1), G(1), TCP, 8080)])
# Also in baseline-admin-network-policy-core-egress-udp-rules.go @107f154e, unchanged.
named_port_test(V1ALPHA1, "banp-egress-named-port", "BaselineAdminNetworkPolicyEgressNamedPort",
                "baseline-admin-network-policy-extended-egress-rules.go", C_135,
                *v1alpha1_policy("Baseline", "egress", UDP),
                "egress", 3, "dns", [allowed(H(0), G(1), UDP, 53), denied(H(1), G(1), UDP, 5353)])

# Combined rules, priorities and the three tiers together.
_t = Test(V1ALPHA1, "anp-gress", "AdminNetworkPolicyGress", A % "gress", C_774,
          [gress_policy("Admin", "gress-rules", 15, "allow-to-hufflepuff-at-ports-8080-5353")],
          [("base/admin_network_policy/core-gress-rules-combined.yaml",
            "648d15cdf83435f066ba7e961f02dc042a7baf1a")])
gress_steps(_t, "gress-rules", "Admin")
_t = Test(V1ALPHA1, "banp-gress", "BaselineAdminNetworkPolicyGress", B % "gress", C_232,
          [gress_policy("Baseline", "default", None, "allow-to-hufflepuff-at-ports-8080-5353")],
          [("base/baseline_admin_network_policy/core-gress-rules-combined.yaml",
            "c82af30b89c06a5ac03e500d37aef1ce110933db")])
gress_steps(_t, "default", "Baseline")
_t = Test(V1ALPHA1, "anp-priority", "AdminNetworkPolicyPriorityField",
          "admin-network-policy-core-priority.go", C_774, priority_policies(None),
          [("base/admin_network_policy/core-priority-field.yaml",
            "c43707a70534917ae52f953ddcecba685c694ab8")])
priority_steps(_t, "ANP", "BANP")
_t = Test(V1ALPHA1, "anp-integration", "AdminNetworkPolicyIntegration",
          "admin-network-policy-core-integration.go", C_774, integration_policies(None),
          [("base/api_integration/core-anp-np-banp.yaml", "42095fba9e07c682a8370091f7e780fe75189964")])
integration_steps(_t, "ANP", "baseline admin network policy")

# Node and CIDR peers (extended features).
_t = Test(V1ALPHA1, "anp-egress-node-peers", "AdminNetworkPolicyEgressNodePeers",
          "admin-network-policy-extended-egress-rules.go", "0668b2f7a7c91f65b18c9ad9c2ecba0c133d35fe",
          [Policy("node-and-cidr-as-peers-example", "Admin", 75, GRYFFINDOR_PODS, egress=[
              rule("allow-egress-to-36363-on-nodes", "Allow", [nodes(npgen.selector({"kubernetes.io/os": "linux"}))],
                   [port(TCP, 36363)]),
              rule("pass-egress-to-5353-on-nodes", "Pass", [nodes(npgen.selector({"kubernetes.io/os": "linux"}))],
                   [port(UDP, 5353)]),
              rule("deny-egress-to-slytherin-and-nodes-and-internet", "Deny",
                   [SLYTHERIN_PODS, nodes(npgen.selector({"kubernetes.io/os": "linux"})),
                    networks("0.0.0.0/0", "::/0")])])],
          [("base/admin_network_policy/extended-egress-selector-rules.yaml",
            "d48faeeb0e0235fce9233fac6fb737cf654e89ed")])
_t.run("Should support an 'allow-egress' rule policy for egress-node-peer",
       allowed(G(0), CENTAUR_1, TCP, 36363))
_t.run("Should support a 'pass-egress' rule policy for egress-node-peer",
       allowed(G(1), CENTAUR_1, UDP, 5353))
_t.run("Should support a 'deny-egress' rule policy for egress-node-peer",
       denied(G(1), CENTAUR_1, TCP, 36364), denied(G(1), CENTAUR_1, UDP, 53),
       denied(G(1), CENTAUR_1, SCTP, 9003))

BANP_EXTENDED = [Policy("default", "Baseline", None, namespaces(house_ns("gryffindor")), egress=[
    rule("allow-egress-to-36363-on-nodes", "Allow", [nodes(npgen.selector({"kubernetes.io/os": "linux"}))],
         [port_range(TCP, 36363, 36364)]),
    rule("deny-egress-to-nodes-and-internet", "Deny",
         [nodes(npgen.selector({"kubernetes.io/os": "linux"})), networks("0.0.0.0/0", "::/0")])])]
BANP_EXTENDED_YAML = [("base/baseline_admin_network_policy/extended-egress-selector-rules.yaml",
                       "7ad308c8f924c92ea158a2404fc614f301f4d959")]
_t = Test(V1ALPHA1, "banp-egress-node-peers", "BaselineAdminNetworkPolicyEgressNodePeers",
          "baseline-admin-network-policy-extended-egress-rules.go", C_135, BANP_EXTENDED,
          BANP_EXTENDED_YAML)
_t.run("Should support an 'allow-egress' rule policy for egress-node-peer",
       allowed(G(0), CENTAUR_1, TCP, 36363), allowed(G(1), CENTAUR_1, TCP, 36364))
_t.run("Should support a 'deny-egress' rule policy for egress-node-peer",
       denied(G(1), CENTAUR_1, UDP, 53), denied(G(1), CENTAUR_1, SCTP, 9003))
_t = Test(V1ALPHA1, "banp-egress-cidr-peers", "BaselineAdminNetworkPolicyEgressInlineCIDRPeers",
          "baseline-admin-network-policy-extended-egress-rules.go", C_135, BANP_EXTENDED,
          BANP_EXTENDED_YAML)
inline_cidr_steps(_t, "default", "Allow", V1ALPHA1.model, full=False)


# ---------------------------------------------------------------------------------------------
# v1alpha2: ClusterNetworkPolicy, Admin and Baseline tiers.

V1ALPHA2 = Suite("v1alpha2", ["gryffindor", "slytherin", "hufflepuff", "ravenclaw",
                              "forbidden-forrest"],
                 "conformance/base/manifests.yaml @d48faeeb (four houses and the host-network "
                 "forbidden-forrest); see README.md.")
AT = "base/admin_tier/"
BT = "base/baseline_tier/"
C_NEW = "562e6e867c1aac16c062bf40ad6624209f834054"  # newest stored policy files (protocols)
C_NEWER = "30ea168a6e8422b78e490abc0a4df50d6c43cbb6"  # ... the commit moving them to v1beta1
C_249 = "2491831360ce313b15144e3326b3f4512cab7b9c"
C_25F = "25f6bf05425885785cd3c633fd8bd27259a81cdb"
C_2D2 = "2d21d068f5a9917a38b648044652769c56c270a9"
# Where each v1alpha2 protocol test's steps and manifest were read. Where the stored manifest
# still used v1alpha2's earlier `ports` field (and, at 8c1c5fa5 / d85a2e80, the action Allow),
# the rules are the same and are written here in the released shape (`protocols`, Accept).
V1ALPHA2_PROTOCOL = {
    ("Admin", "ingress", TCP): ("admin-network-policy-standard-ingress-tcp-rules.go", C_249, C_NEW),
    ("Admin", "egress", TCP): ("admin-network-policy-standard-egress-tcp-rules.go",
                               "4d38b37f304ba60129e67fd975d6f5c0def5dbbb",
                               "295a4ff8f5d9ad1efa82cc900c3f0241ed348ae4"),
    ("Admin", "ingress", UDP): ("admin-network-policy-standard-ingress-udp-rules.go",
                                "92965928cc25a6a4f04e0d9d03cfe46e625d4d09",
                                "8c1c5fa535ef0e72b05287190520b22fd2ed1003"),
    ("Admin", "egress", UDP): ("admin-network-policy-standard-egress-udp-rules.go",
                               "ae899497990893df5e632fc41765f7b1877c42e9",
                               "d85a2e8061cc6bec5a0e30294e6abf847a6dce8e"),
    # Only the v1alpha1 (AdminNetworkPolicy) text of this file was stored; same steps.
    ("Admin", "ingress", SCTP): ("admin-network-policy-standard-ingress-sctp-rules.go",
                                 "4d4a53a6a9f146b0ca4bf6db4b78f1136939b22c",
                                 "3afae2db2e91ca663fcf299c80a60e0d2a3716e4"),
    ("Admin", "egress", SCTP): ("admin-network-policy-standard-egress-sctp-rules.go",
                                "ae899497990893df5e632fc41765f7b1877c42e9", C_NEW),
    ("Baseline", "ingress", TCP): ("baseline-admin-network-policy-standard-ingress-tcp-rules.go",
                                   C_249, C_NEW),
    ("Baseline", "egress", TCP): ("baseline-admin-network-policy-standard-egress-tcp-rules.go",
                                  C_249, C_NEW),
    ("Baseline", "ingress", UDP): ("baseline-admin-network-policy-standard-ingress-udp-rules.go",
                                   C_25F, C_NEW),
    # Only the v1alpha1 (BaselineAdminNetworkPolicy) text of these two files was stored.
    ("Baseline", "egress", UDP): ("baseline-admin-network-policy-standard-egress-udp-rules.go",
                                  C_2D2, C_NEWER),
    ("Baseline", "ingress", SCTP): ("baseline-admin-network-policy-standard-ingress-sctp-rules.go",
                                    C_2D2, C_NEWER),
    ("Baseline", "egress", SCTP): ("baseline-admin-network-policy-standard-egress-sctp-rules.go",
                                   C_25F, C_NEW),
}


def v1alpha2_manifest(tier, direction, protocol):
  yaml = "%sstandard-%s-%s-rules.yaml" % (AT if tier == "Admin" else BT, direction,
                                         protocol.lower())
  return (protocol_policy(tier, direction, protocol),
          (yaml, V1ALPHA2_PROTOCOL[(tier, direction, protocol)][2]))


def tier_slug(tier):
  return "admin" if tier == "Admin" else "baseline"


for (_tier, _direction, _protocol), (_go, _commit, _) in V1ALPHA2_PROTOCOL.items():
  _policy, _manifest = v1alpha2_manifest(_tier, _direction, _protocol)
  _t = Test(V1ALPHA2, "%s-%s-%s" % (tier_slug(_tier), _direction, _protocol.lower()),
            "CNP%sTier%s%s" % (_tier, _direction.capitalize(), _protocol), _go, _commit, [_policy],
            [_manifest])
  # The TCP tests read at 2491831 check the other direction before any swap.
  _extra = NOT_AFFECT[_direction] if (_protocol == TCP and _commit == C_249) else None
  if _tier == "Admin":
    admin_protocol_steps(_t, _policy.name, _direction, _protocol,
                         ADMIN_PROBES[(_direction, _protocol)], _extra)
  else:
    baseline_protocol_steps(_t, _direction, _protocol, BASELINE_PROBES[(_direction, _protocol)],
                            _extra)

# Named ports (feature ClusterNetworkPolicyNamedPorts).
named_port_test(V1ALPHA2, "admin-egress-named-port", "CNPAdminTierEgressNamedPort",
                "admin-network-policy-experimental-egress-rules.go",
                "2c8a1a8b9f3b7e228c0cbcd5ee0d327e50978ca4", *v1alpha2_manifest("Admin", "egress", TCP),
                "egress", 5, "web", [allowed(G(0), H(1), TCP, 80), denied(G(1), H(1), TCP, 8080)])
# Defined but not registered in init() at 30ea168a; transcribed all the same.
named_port_test(V1ALPHA2, "admin-ingress-named-port", "CNPAdminTierIngressNamedPort",
                "admin-network-policy-experimental-ingress-rules.go", C_NEWER,
                *v1alpha2_manifest("Admin", "ingress", UDP),
                "ingress", 5, "dns", [allowed(G(0), H(1), UDP, 53), denied(G(1), H(1), UDP, 5353)])
named_port_test(V1ALPHA2, "baseline-egress-named-port", "CNPBaselineTierEgressNamedPort",
                "baseline-admin-network-policy-experimental-egress-rules.go",
                "10a760226b0319d4a1abada05901c5dd2891f14f",
                *v1alpha2_manifest("Baseline", "egress", UDP),
                "egress", 3, "dns", [allowed(H(0), G(1), UDP, 53), denied(H(1), G(1), UDP, 5353)])
named_port_test(V1ALPHA2, "baseline-ingress-named-port", "CNPBaselineTierIngressNamedPort",
                "baseline-admin-network-policy-experimental-ingress-rules.go", C_NEWER,
                *v1alpha2_manifest("Baseline", "ingress", TCP),
                "ingress", 3, "web", [allowed(H(0), G(1), TCP, 80), denied(H(1), G(1), TCP, 8080)])

# Combined rules.
_t = Test(V1ALPHA2, "admin-gress", "CNPAdminTierGress", "admin-network-policy-standard-gress-rules.go",
          C_25F, [gress_policy("Admin", "gress-rules", 15, "allow-to-hufflepuff-at-ports-8080-5353-9003")],
          [(AT + "standard-gress-rules-combined.yaml", C_NEWER)])
gress_steps(_t, "gress-rules", "Admin")
_t = Test(V1ALPHA2, "baseline-gress", "CNPBaselineTierGress",
          "baseline-admin-network-policy-standard-gress-rules.go", C_25F,
          [gress_policy("Baseline", "default", 10, "allow-to-hufflepuff-at-ports-8080-5353")],
          [(BT + "standard-gress-rules-combined.yaml", C_NEWER)])
gress_steps(_t, "default", "Baseline")

# A policy with rules for one direction only leaves the other direction alone.
for _tier, _commit in (("Admin", "e98949c494555f55b62865b699e0ad3478820e5c"),
                       ("Baseline", "896ee815a14ff145312fb80fd8f3ee24633358e6")):
  _base = AT if _tier == "Admin" else BT
  _go = "%s-network-policy-standard-ingress-egress-isolation.go" % (
      "admin" if _tier == "Admin" else "baseline-admin")
  _slytherin = [namespaces(house_ns("slytherin"))]
  _t = Test(V1ALPHA2, "%s-ingress-rules-egress-unaffected" % tier_slug(_tier),
            "CNP%sTierIngressRulesEgressUnaffected" % _tier, _go,
            "e98949c494555f55b62865b699e0ad3478820e5c",
            [Policy("%s-ingress-isolation" % tier_slug(_tier), _tier, 20,
                    namespaces(house_ns("gryffindor")),
                    ingress=[rule("deny-from-slytherin", "Deny", _slytherin)])],
            [(_base + "standard-ingress-isolation.yaml", _commit)])
  _t.run("Should enforce the ingress rule: deny ingress from slytherin to gryffindor",
         denied(S(0), G(0), TCP, 80))
  _t.run("Should not affect egress: gryffindor can still egress to ravenclaw",
         allowed(G(0), R(0), TCP, 80))
  _t.run("Should not affect egress: gryffindor can still egress to hufflepuff",
         allowed(G(0), H(0), TCP, 80))
  _t = Test(V1ALPHA2, "%s-egress-rules-ingress-unaffected" % tier_slug(_tier),
            "CNP%sTierEgressRulesIngressUnaffected" % _tier, _go,
            "e98949c494555f55b62865b699e0ad3478820e5c",
            [Policy("%s-egress-isolation" % tier_slug(_tier), _tier, 20,
                    namespaces(house_ns("gryffindor")),
                    egress=[rule("deny-to-slytherin", "Deny", _slytherin)])],
            [(_base + "standard-egress-isolation.yaml", _commit)])
  _t.run("Should enforce the egress rule: deny egress from gryffindor to slytherin",
         denied(G(0), S(0), TCP, 80))
  _t.run("Should not affect ingress: ravenclaw can still reach gryffindor",
         allowed(R(0), G(0), TCP, 80))
  _t.run("Should not affect ingress: hufflepuff can still reach gryffindor",
         allowed(H(0), G(0), TCP, 80))

# Pod selectors in subjects and peers.
for _tier, _priorities in (("Admin", (20, 21)), ("Baseline", (10, 10))):
  _go = "%s-network-policy-standard-pod-selector-rules.go" % (
      "admin" if _tier == "Admin" else "baseline-admin")
  _cedric0 = pods(house_label("hufflepuff"), pod_name("cedric-diggory-0"))
  _t = Test(V1ALPHA2, "%s-pod-selector" % tier_slug(_tier), "CNP%sTierPodSelector" % _tier, _go,
            "2643c7d16404fc0b5dfe96c8e8a6cc819b20fb35", [
                # namespaceSelector omitted on purpose: gryffindor's pods by pod label alone
                Policy("pod-selector-rules", _tier, _priorities[0],
                       pods(None, house_label("gryffindor")),
                       ingress=[rule("deny-from-slytherin-pods", "Deny",
                                     [pods(None, house_label("slytherin"))]),
                                rule("deny-from-cedric-diggory-0", "Deny", [_cedric0])],
                       egress=[rule("deny-to-ravenclaw-pods", "Deny",
                                    [pods(None, house_label("ravenclaw"))]),
                               rule("deny-to-cedric-diggory-0", "Deny", [_cedric0])]),
                Policy("pod-name-subject-rules", _tier, _priorities[1],
                       pods(house_label("ravenclaw"), pod_name("luna-lovegood-0")),
                       egress=[rule("deny-to-slytherin", "Deny",
                                    [namespaces(house_ns("slytherin"))])])],
            [((AT if _tier == "Admin" else BT) + "standard-pod-selector-rules.yaml",
              "c159ab29a9cadb3f4e2d5b22132f256d97d5103f")])
  _t.run("Should support pod selectors in egress peers",
         denied(G(0), R(0), TCP, 80), denied(G(0), H(0), TCP, 80), allowed(G(0), H(1), TCP, 80))
  _t.run("Should support pod selectors in ingress peers",
         denied(S(0), G(0), TCP, 80), denied(H(0), G(0), TCP, 80), allowed(H(1), G(0), TCP, 80))
  _t.run("Should support pod selectors in the subject",
         allowed(S(0), H(0), TCP, 80), denied(R(0), S(0), TCP, 80), allowed(R(1), S(0), TCP, 80))

# Port ranges across protocols.
for _tier, _priority, _go, _commit, _yaml_commit in (
    ("Admin", 9, "admin-network-policy-standard-port-range-rules.go",
     "b9f7a830d80fb85379a3dcdc896ad50e0bfccd89", C_NEW),
    ("Baseline", 10, "baseline-admin-network-policy-standard-port-range-rules.go",
     "e1576bf6adf8770498fbcb6b5eb474189971e065", C_NEWER)):
  _ranges = (("ravenclaw", port_range(TCP, 80, 8080)), ("hufflepuff", port_range(UDP, 53, 5353)),
             ("slytherin", port_range(SCTP, 9003, 9005)))
  _any_house = namespaces(npgen.selector(match_expressions=[("conformance-house", "Exists", None)]))

  def _side(w, _ranges=_ranges, _any_house=_any_house):
    return ([rule("allow-%s-%s-%s-port-range" % (w, house, rng[1].lower()), "Allow",
                  [namespaces(house_ns(house))], [rng]) for house, rng in _ranges] +
            [rule("deny-all-%s" % ("egress" if w == "to" else "ingress"), "Deny", [_any_house])])
  _t = Test(V1ALPHA2, "%s-port-range" % tier_slug(_tier), "CNP%sTierPortRange" % _tier, _go,
            _commit, [Policy("port-range-rules", _tier, _priority, namespaces(house_ns("gryffindor")),
                             ingress=_side("from"), egress=_side("to"))],
            [((AT if _tier == "Admin" else BT) + "standard-port-range-rules-combined.yaml",
              _yaml_commit)])
  _t.run("Should support egress port range rules across different protocols",
         allowed(G(0), R(0), TCP, 80), allowed(G(0), R(0), TCP, 8080), denied(G(1), R(0), UDP, 53),
         allowed(G(0), H(0), UDP, 53), allowed(G(0), H(0), UDP, 5353), denied(G(1), H(0), TCP, 80),
         allowed(G(0), S(0), SCTP, 9003), allowed(G(0), S(0), SCTP, 9005),
         denied(G(1), S(0), TCP, 80))
  _t.run("Should support ingress port range rules across different protocols",
         allowed(R(0), G(0), TCP, 80), allowed(R(0), G(0), TCP, 8080), denied(R(1), G(0), UDP, 53),
         allowed(H(0), G(0), UDP, 53), allowed(H(0), G(0), UDP, 5353), denied(H(1), G(0), TCP, 80),
         allowed(S(0), G(0), SCTP, 9003), allowed(S(0), G(0), SCTP, 9005),
         denied(S(1), G(0), TCP, 80))

# Priorities and the three tiers together.
_t = Test(V1ALPHA2, "admin-priority", "CNPAdminTierPriorityField",
          "admin-network-policy-standard-priority.go", "295a4ff8f5d9ad1efa82cc900c3f0241ed348ae4",
          priority_policies(10), [(AT + "standard-priority-field.yaml", C_NEW)])
priority_steps(_t, "admin CNP", "baseline CNP")
_t = Test(V1ALPHA2, "admin-integration", "CNPAdminTierIntegration",
          "admin-network-policy-standard-integration.go", C_25F, integration_policies(10),
          [("base/api_integration/standard-anp-np-banp.yaml", C_NEWER)])
integration_steps(_t, "admin CNP", "baseline cluster network policy")


# Policies of one tier with the same priority are all applied.
def same_priority_policies(tier, prefix, priority):
  def deny_both(name, subject, peer, port_number):
    return Policy(name, tier, priority, namespaces(house_ns(subject)),
                  ingress=[rule("deny-from-%s-at-port-%d" % (peer, port_number), "Deny",
                                [namespaces(house_ns(peer))], [port(TCP, port_number)])],
                  egress=[rule("deny-to-%s-at-port-%d" % (peer, port_number), "Deny",
                               [namespaces(house_ns(peer))], [port(TCP, port_number)])])
  return [deny_both(prefix + "same-priority-gryffindor-slytherin", "gryffindor", "slytherin", 80),
          deny_both(prefix + "same-priority-gryffindor-hufflepuff", "gryffindor", "hufflepuff", 80),
          deny_both(prefix + "same-priority-hufflepuff-slytherin", "hufflepuff", "slytherin", 8080)]


for _tier, _prefix, _priority, _go, _commit, _yaml_commit, _servers, _to_ravenclaw in (
    # the server pods (gryffindor, slytherin, hufflepuff, ravenclaw); the client of ravenclaw's
    ("Admin", "", 15, "admin-network-policy-standard-same-priority.go",
     "efe784ef4b71d0c3a9b2153da741e7af93db8be7", "3004fc78a2dab155d5efc3e83738a7e047946496",
     (G(0), S(0), H(0), R(0)), G(1)),
    ("Baseline", "baseline-", 10, "baseline-admin-network-policy-standard-same-priority.go",
     "3004fc78a2dab155d5efc3e83738a7e047946496", C_NEWER, (G(1), S(1), H(1), R(1)), G(0))):
  _g, _s, _h, _r = _servers
  _t = Test(V1ALPHA2, "%s-same-priority" % tier_slug(_tier), "CNP%sTierSamePriority" % _tier, _go,
            _commit, same_priority_policies(_tier, _prefix, _priority),
            [((AT if _tier == "Admin" else BT) + "standard-same-priority.yaml", _yaml_commit)])
  _t.run("Should deny traffic in both directions for each same-priority policy",
         denied(S(0), _g, TCP, 80), denied(G(0), _s, TCP, 80), denied(H(0), _g, TCP, 80),
         denied(G(1), _h, TCP, 80), denied(S(1), _h, TCP, 8080), denied(H(1), _s, TCP, 8080))
  _t.run("Should not apply one same-priority policy's rules to another policy's subject",
         allowed(S(0), _g, TCP, 8080), allowed(G(0), _s, TCP, 8080), allowed(S(1), _h, TCP, 80),
         allowed(H(0), _s, TCP, 80))
  _t.run("Should not affect traffic matching no same-priority policy",
         allowed(R(0), _g, TCP, 80), allowed(_to_ravenclaw, _r, TCP, 80))

# The earlier version of the admin same-priority test (two disjoint policies, two files).
_any_namespace = namespaces({"matchLabels": {}})
_t = Test(V1ALPHA2, "admin-same-priority-disjoint", "CNPAdminTierSamePriority",
          "admin-network-policy-same-priority.go", "ca0e307370ef096943b78fb46a46e943d3ae084e", [
              Policy("same-priority-1", "Admin", 15, namespaces(house_ns("gryffindor")), ingress=[
                  rule("allow-from-ravenclaw", "Allow", [namespaces(house_ns("ravenclaw"))]),
                  rule("deny-all-else", "Deny", [_any_namespace])]),
              Policy("same-priority-2", "Admin", 15, namespaces(house_ns("hufflepuff")), ingress=[
                  rule("allow-from-slytherin", "Allow", [namespaces(house_ns("slytherin"))]),
                  rule("deny-all-else", "Deny", [_any_namespace])])],
          [(AT + "same-priority-1.yaml", "7511fdbcf91263096e815c4d244ab51f37bbb21d"),
           (AT + "same-priority-2.yaml", "ca0e307370ef096943b78fb46a46e943d3ae084e")])
_t.run("Should allow traffic matching same priority disjoint policies",
       allowed(R(0), G(0), TCP, 80), allowed(S(0), H(0), TCP, 80))
_t.run("Should deny traffic not matching same priority disjoint policies",
       denied(S(0), G(0), TCP, 80), denied(R(0), H(0), TCP, 80))

# Egress to CIDR peers.
for _tier, _name, _priority, _subject, _go, _commit, _yaml_commit in (
    ("Admin", "inline-cidr-as-peers-example", 85, GRYFFINDOR_PODS,
     "admin-network-policy-standard-egress-inline-cidr-rules.go",
     "295a4ff8f5d9ad1efa82cc900c3f0241ed348ae4", C_NEWER),
    # Only the v1alpha1 (BaselineAdminNetworkPolicy) text of this file was stored; same steps.
    ("Baseline", "default", 10, namespaces(house_ns("gryffindor")),
     "baseline-admin-network-policy-standard-egress-inline-cidr-rules.go",
     "47a85071023b4d6b96eae9dbe19e0934b3cfb626", C_NEW)):
  _t = Test(V1ALPHA2, "%s-egress-cidr-peers" % tier_slug(_tier),
            "CNP%sTierEgressInlineCIDRPeers" % _tier, _go, _commit,
            [Policy(_name, _tier, _priority, _subject, egress=[
                rule("allow-egress-to-slytherin", "Allow", [SLYTHERIN_PODS]),
                rule("deny-egress-to-internet", "Deny", [networks("0.0.0.0/0", "::/0")])])],
            [((AT if _tier == "Admin" else BT) + "standard-egress-inline-cidr-rules.yaml",
              _yaml_commit)])
  inline_cidr_steps(_t, _name, "Allow", V1ALPHA2.model)

# Egress to node peers (feature ClusterNetworkPolicyEgressNodePeers). The policy files are Go
# templates over the suite's HostNetworkPorts; the ports below are the ones the same tests poked
# before the templating (734971cc, 10a76022): [0]=36363 [1]=36364 [2]=34345 [4]=34346 [6]=9003.
LINUX_NODES = nodes(npgen.selector({"kubernetes.io/os": "linux"}))
_t = Test(V1ALPHA2, "admin-egress-node-peers", "CNPAdminTierEgressNodePeers",
          "admin-network-policy-experimental-egress-rules.go",
          "2c8a1a8b9f3b7e228c0cbcd5ee0d327e50978ca4",
          [Policy("node-and-cidr-as-peers-example", "Admin", 75, GRYFFINDOR_PODS, egress=[
              rule("allow-egress-to-36363-on-nodes", "Allow", [LINUX_NODES], [port(TCP, 36363)]),
              rule("pass-egress-to-34345-on-nodes", "Pass", [LINUX_NODES], [port(UDP, 34345)]),
              rule("deny-egress-to-slytherin-and-nodes-and-internet", "Deny",
                   [SLYTHERIN_PODS, LINUX_NODES, networks("0.0.0.0/0", "::/0")])])],
          [(AT + "experimental-egress-selector-rules.yaml", C_NEW)])
_t.run("Should support an 'allow-egress' rule policy for egress-node-peer",
       allowed(G(1), CENTAUR_1, TCP, 36363))
_t.run("Should support a 'pass-egress' rule policy for egress-node-peer",
       allowed(G(1), CENTAUR_1, UDP, 34345))
_t.run("Should support a 'deny-egress' rule policy for egress-node-peer",
       denied(G(1), CENTAUR_1, TCP, 36364), denied(G(1), CENTAUR_1, UDP, 34346),
       denied(G(1), CENTAUR_1, SCTP, 9003))
_t = Test(V1ALPHA2, "baseline-egress-node-peers", "CNPBaselineTierEgressNodePeers",
          "baseline-admin-network-policy-experimental-egress-rules.go",
          "10a760226b0319d4a1abada05901c5dd2891f14f",
          [Policy("default", "Baseline", 10, namespaces(house_ns("gryffindor")), egress=[
              rule("allow-egress-to-36363-on-nodes", "Allow", [LINUX_NODES],
                   [port_range(TCP, 36363, 36364)]),
              rule("deny-egress-to-nodes-and-internet", "Deny",
                   [LINUX_NODES, networks("0.0.0.0/0", "::/0")])])],
          [(BT + "experimental-egress-selector-rules.yaml", C_NEWER)])
_t.run("Should support an 'allow-egress' rule policy for egress-node-peer",
       allowed(G(0), CENTAUR_1, TCP, 36363), allowed(G(1), CENTAUR_1, TCP, 36364))
_t.run("Should support a 'deny-egress' rule policy for egress-node-peer",
       denied(G(1), CENTAUR_1, UDP, 34346), denied(G(1), CENTAUR_1, SCTP, 9003))

# Hairpin: a pod reaching a Service whose endpoints include itself.
_t = Test(V1ALPHA2, "admin-hairpin", "CNPAdminTierHairpin", "admin-network-policy-hairpin-rules.go",
          "d1a2cd7a5cc9410072b51949e54df2ff238a7021",
          [Policy("hairpin-ingress-deny", "Admin", 15, namespaces(house_ns("gryffindor")), ingress=[
              rule("deny-gryffindor-ingress", "Deny", [namespaces(house_ns("gryffindor"))])])],
          [(AT + "hairpin-rules.yaml", "d1a2cd7a5cc9410072b51949e54df2ff238a7021")],
          note="Upstream pokes the Service's ClusterIP; kube-proxy sends the connection to one of "
               "its endpoints (harry-potter-0 itself or harry-potter-1): one flow per endpoint.")
_t.extra_objects.append({
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "harry-potter-hairpin-service",
                 "namespace": "network-policy-conformance-gryffindor"},
    "spec": {"selector": {"conformance-house": "gryffindor"},
             "ports": [{"name": "web", "port": 80, "targetPort": 80, "protocol": TCP}]}})
_t.run("Should enforce CNP ingress deny policy on hairpin service traffic",
       denied(G(0), G(0), TCP, 80), denied(G(0), G(1), TCP, 80))


# ---------------------------------------------------------------------------------------------

SUITES = [V1ALPHA1, V1ALPHA2]


def render_all():
  """{path relative to this directory: file text} for every generated file."""
  out = {}
  for suite in SUITES:
    for name, (header, docs) in suite.files().items():
      out[os.path.join(suite.version, name)] = npgen.documents_text(header, docs)
  return out


def flow_counts():
  """{version: number of expected flows}."""
  return {s.version: sum(len(probes) for t in s.tests for _, _, runs in t.states
                         for _, _, probes in runs) for s in SUITES}


def readme_table(suite):
  """The README's table of files and upstream tests (`gen.py --table`)."""
  rows = ["| Files | Upstream test (conformance/tests/...) | Manifests | Steps per file |",
          "|---|---|---|---|"]
  for t in suite.tests:
    with_steps = [(k, runs) for k, (_, _, runs) in enumerate(t.states) if runs]
    if len(with_steps) == 1:
      files, steps = "`%s`" % t.slug, ", ".join(str(n) for n, _, _ in with_steps[0][1])
    else:
      files = "`%s-{%s}`" % (t.slug, ",".join(str(k) for k, _ in with_steps))
      steps = "; ".join("%d: %s" % (k, ",".join(str(n) for n, _, _ in runs))
                        for k, runs in with_steps)
    manifests = ", ".join("%s @%s" % (m.replace("base/", ""), c[:8]) for m, c in t.manifests)
    rows.append("| %s | %s (`%s` @%s) | %s | %s |" % (files, t.short_name, t.go_file,
                                                      t.commit[:8], manifests, steps))
  return "\n".join(rows)


def main():
  if sys.argv[1:] == ["--table"]:
    for suite in SUITES:
      print("%s\n\n%s\n" % (suite.version, readme_table(suite)))
    return
  files = render_all()
  for suite in SUITES:
    for old in glob.glob(os.path.join(HERE, suite.version, "*.yaml")):
      os.remove(old)
  for rel, text in sorted(files.items()):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
  counts = flow_counts()
  for suite in SUITES:
    n = sum(1 for rel in files if rel.startswith(suite.version + os.sep))
    print("%s: %d tests, %d files, %d flows" % (suite.version, len(suite.tests), n,
                                                counts[suite.version]))


if __name__ == "__main__":
  main()
