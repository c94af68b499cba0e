#!/usr/bin/python3 -B
"""Writes testdata/upstream/*.yaml: the upstream e2e NetworkPolicy scenarios
(kubernetes test/e2e/network/netpol/network_policy.go) with their expected truth tables.

Every scenario below transcribes one upstream It(): its policies (built with the same helper
shapes as upstream's policies.go) and its expectations (written with the same calls as upstream's
reachability.go: expect, expect_all_ingress, expect_all_egress, expect_peer). Nothing here is
computed by np. See README.md for the model, the IP scheme and what was left out.

Usage: /usr/bin/python3 -B testdata/upstream/gen.py   (rewrites the YAML files next to it)
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npgen import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
FILE = "kubernetes test/e2e/network/netpol/network_policy.go"
CTX_TCP = 'Describe("Netpol") Context("NetworkPolicy between server and client")'
CTX_UDP = ('Describe("Netpol [LinuxOnly]") '
           'Context("NetworkPolicy between server and client using UDP")')
CTX_SCTP = ('Describe("Netpol", feature.SCTPConnectivity, "[LinuxOnly]") '
            'Context("NetworkPolicy between server and client using SCTP")')
PR_ENDPORT = ("kubernetes/kubernetes PR #100291 (closed, never merged) "
              "test/e2e/network/netpol/network_policy.go: "
              'Context("NetworkPolicy between server and client using port range")')

NS_LABEL = "kubernetes.io/metadata.name"  # upstream: namespaceLabelKey, v1.LabelMetadataName
TCP, UDP, SCTP = "TCP", "UDP", "SCTP"

MODEL = upstream_model()
PODS = MODEL.pod_names()
nsX, nsY, nsZ = "x", "y", "z"


def pod(ns, name):  # upstream NewPodString
  return "%s/%s" % (ns, name)


def new_reachability(default=True):  # NewReachability(k8s.AllPodStrings(), true)
  return Reachability(PODS, default)


def src(it, context=CTX_TCP, step=None):
  text = '%s: %s It("%s")' % (FILE, context, it)
  if step:
    text += " -- " + step
  return text


SCENARIOS = []


def scenario(fn):
  SCENARIOS.append(fn)
  return fn


class File(object):
  def __init__(self, name, source, policies, expectations, model=MODEL, notes=""):
    self.name = name
    self.source = source
    self.policies = policies  # list of (policy, namespace)
    self.expectations = expectations
    self.model = model
    self.notes = notes


def one(name, it, policies, cases, context=CTX_TCP, options=None, model=MODEL, notes=""):
  source = src(it, context)
  return [File(name, source, policies,
               [expectation(name, source, cases=cases, options=options)], model, notes)]


# =============================================================================================
# Context("NetworkPolicy between server and client")


@scenario
def default_deny_ingress():
  it = "should support a 'default-deny-ingress' policy"
  policy = gen_network_policy_with_name_and_pod_selector("deny-ingress", selector(),
                                                         set_spec_ingress_rules())
  r = new_reachability()
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  return one("default-deny-ingress", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def default_deny_all():
  it = "should support a 'default-deny-all' policy"
  policy = gen_network_policy_with_name_and_pod_selector(
      "deny-all", selector(), set_spec_ingress_rules(), set_spec_egress_rules())
  r = new_reachability()
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  r.expect_peer(Peer(namespace=nsX), Peer(), False)
  return one("default-deny-all", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def allow_from_pods_within_namespace():
  it = ("should enforce policy to allow traffic from pods within server namespace based on "
        "PodSelector")
  allowed_pods = selector(match_labels={"pod": "b"})
  rule = ingress_rule(from_=[peer(pod_selector=allowed_pods)])
  policy = gen_network_policy_with_name_and_pod_match_label("x-a-allows-x-b", {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  r.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  return one("allow-from-pods-within-namespace-by-pod-selector", it, [(policy, nsX)],
             [case(TCP, 80, r)])


@scenario
def allow_ingress_for_target():
  it = "should enforce policy to allow ingress traffic for a target"
  deny = gen_network_policy_with_name_and_pod_selector("deny-all", selector(),
                                                       set_spec_ingress_rules())
  rule = ingress_rule(from_=[peer(pod_selector=selector(), namespace_selector=selector())])
  allow = gen_network_policy_with_name_and_pod_match_label("allow-all-to-a", {"pod": "a"},
                                                           set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), True)
  r.expect_all_ingress(pod(nsX, "b"), False)
  r.expect_all_ingress(pod(nsX, "c"), False)
  return one("allow-ingress-for-a-target", it, [(deny, nsX), (allow, nsX)], [case(TCP, 80, r)])


@scenario
def allow_ingress_from_all_namespaces():
  it = "should enforce policy to allow ingress traffic from pods in all namespaces"
  rule = ingress_rule(from_=[peer(namespace_selector=selector())])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-from-another-ns",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  return one("allow-ingress-from-all-namespaces", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def allow_only_from_different_namespace():
  it = ("should enforce policy to allow traffic only from a different namespace, based on "
        "NamespaceSelector")
  rule = ingress_rule(from_=[peer(namespace_selector=selector(match_labels={NS_LABEL: nsY}))])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-ns-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  return one("allow-only-from-different-namespace-by-namespace-selector", it, [(policy, nsX)],
             [case(TCP, 80, r)])


@scenario
def pod_selector_match_expressions():
  it = "should enforce policy based on PodSelector with MatchExpressions"
  allowed_pods = selector(match_expressions=[("pod", "In", ["b"])])
  rule = ingress_rule(from_=[peer(pod_selector=allowed_pods)])
  policy = gen_network_policy_with_name_and_pod_match_label("x-a-allows-x-b", {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  r.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  return one("pod-selector-match-expressions", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def namespace_selector_match_expressions():
  it = "should enforce policy based on NamespaceSelector with MatchExpressions"
  allowed_ns = selector(match_expressions=[(NS_LABEL, "In", [nsY])])
  rule = ingress_rule(from_=[peer(namespace_selector=allowed_ns)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-ns-y-match-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  return one("namespace-selector-match-expressions", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def pod_selector_or_namespace_selector():
  it = "should enforce policy based on PodSelector or NamespaceSelector"
  allowed_ns = selector(match_expressions=[(NS_LABEL, "NotIn", [nsX])])
  pod_b = selector(match_labels={"pod": "b"})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed_ns), peer(pod_selector=pod_b)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-ns-y-match-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect(pod(nsX, "a"), pod(nsX, "a"), False)
  r.expect(pod(nsX, "c"), pod(nsX, "a"), False)
  return one("pod-selector-or-namespace-selector", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def pod_selector_and_namespace_selector():
  it = "should enforce policy based on PodSelector and NamespaceSelector"
  allowed_ns = selector(match_expressions=[(NS_LABEL, "NotIn", [nsX])])
  allowed_pod = selector(match_labels={"pod": "b"})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed_ns, pod_selector=allowed_pod)])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-ns-y-podselector-and-nsselector", {"pod": "a"}, set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  r.expect(pod(nsY, "b"), pod(nsX, "a"), True)
  r.expect(pod(nsZ, "b"), pod(nsX, "a"), True)
  return one("pod-selector-and-namespace-selector", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def multiple_pod_selectors_and_namespace_selectors():
  it = "should enforce policy based on Multiple PodSelectors and NamespaceSelectors"
  allowed_ns = selector(match_expressions=[(NS_LABEL, "NotIn", [nsX])])
  allowed_pod = selector(match_expressions=[("pod", "In", ["b", "c"])])
  rule = ingress_rule(from_=[peer(namespace_selector=allowed_ns, pod_selector=allowed_pod)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-ns-y-z-pod-b-c",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  r.expect(pod(nsY, "a"), pod(nsX, "a"), False)
  r.expect(pod(nsZ, "a"), pod(nsX, "a"), False)
  return one("multiple-pod-selectors-and-namespace-selectors", it, [(policy, nsX)],
             [case(TCP, 80, r)])


@scenario
def any_pod_selectors():
  it = "should enforce policy based on any PodSelectors"
  rule = ingress_rule(from_=[peer(pod_selector=selector(match_labels=l))
                             for l in ({"pod": "b"}, {"pod": "c"})])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-ns-x-pod-b-c", {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  r.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  r.expect(pod(nsX, "c"), pod(nsX, "a"), True)
  return one("any-pod-selectors", it, [(policy, nsX)], [case(TCP, 80, r)])


def _allow_ns_y_pod_a(it, name, protocol, port_number, context):
  allowed_ns = selector(match_labels={NS_LABEL: nsY})
  allowed_pods = selector(match_labels={"pod": "a"})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed_ns, pod_selector=allowed_pods)])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-ns-y-pod-a-via-namespace-pod-selector", {"pod": "a"}, set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  r.expect(pod(nsY, "a"), pod(nsX, "a"), True)
  return one(name, it, [(policy, nsX)], [case(protocol, port_number, r)], context=context)


@scenario
def allow_only_from_pod_in_different_namespace():
  return _allow_ns_y_pod_a(
      "should enforce policy to allow traffic only from a pod in a different namespace based on "
      "PodSelector and NamespaceSelector",
      "allow-only-from-pod-in-different-namespace", TCP, 80, CTX_TCP)


def _ports(name, protocol, policy_name, context, expect_y_true):
  it = "should enforce policy based on Ports"
  allowed = selector(match_labels={NS_LABEL: nsY})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed)],
                      ports=[port(port=81, protocol=protocol)])
  policy = gen_network_policy_with_name_and_pod_match_label(policy_name, {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  if expect_y_true:  # the TCP variant says so explicitly; UDP and SCTP rely on the default
    r.expect_peer(Peer(namespace=nsY), Peer(namespace=nsX, pod="a"), True)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  return one(name, it, [(policy, nsX)], [case(protocol, 81, r)], context=context)


@scenario
def ports():
  return _ports("ports", TCP, "allow-client-a-via-ns-selector", CTX_TCP, True)


@scenario
def stacked_policies():
  it = "should enforce multiple, stacked policies with overlapping podSelectors"
  allowed = selector(match_labels={NS_LABEL: nsY})
  rule81 = ingress_rule(from_=[peer(namespace_selector=allowed)],
                        ports=[port(port=81, protocol=TCP)])
  p81 = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-ns-selector",
                                                         {"pod": "a"},
                                                         set_spec_ingress_rules(rule81))
  allow = new_reachability()  # reachabilityALLOW
  allow.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  allow.expect_peer(Peer(namespace=nsY), Peer(namespace=nsX, pod="a"), True)
  allow.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  deny = new_reachability()  # reachabilityDENY
  deny.expect_all_ingress(pod(nsX, "a"), False)

  rule80 = ingress_rule(from_=[peer(namespace_selector=allowed)],
                        ports=[port(port=80, protocol=TCP)])
  p80 = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-ns-selector-80",
                                                         {"pod": "a"},
                                                         set_spec_ingress_rules(rule80))
  before = "stacked-policies-overlapping-pod-selectors-before"
  after = "stacked-policies-overlapping-pod-selectors-after"
  s1 = src(it, step="step 1 of 2: only allow-client-a-via-ns-selector (port 81) exists")
  s2 = src(it, step="step 2 of 2: after CreatePolicy(allow-client-a-via-ns-selector-80)")
  return [
      File(before, s1, [(p81, nsX)],
           [expectation(before, s1, cases=[case(TCP, 81, allow), case(TCP, 80, deny)])]),
      File(after, s2, [(p81, nsX), (p80, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, allow)])]),
  ]


@scenario
def allow_all():
  it = "should support allow-all policy"
  policy = gen_network_policy_with_name_and_pod_match_label("allow-all", {},
                                                            set_spec_ingress_rules(ingress_rule()))
  r = new_reachability()
  return one("allow-all", it, [(policy, nsX)], [case(TCP, 80, r), case(TCP, 81, r)])


@scenario
def ingress_on_one_named_port():
  it = "should allow ingress access on one named port"
  rule = ingress_rule(ports=[port(port="serve-81-tcp")])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-all", {},
                                                            set_spec_ingress_rules(rule))
  r81 = new_reachability()
  r80 = new_reachability()
  r80.expect_peer(Peer(), Peer(namespace=nsX), False)
  return one("ingress-on-one-named-port", it, [(policy, nsX)],
             [case(TCP, 81, r81), case(TCP, 80, r80)])


@scenario
def ingress_from_namespace_on_one_named_port():
  it = "should allow ingress access from namespace on one named port"
  allowed = selector(match_labels={NS_LABEL: nsY})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed)],
                      ports=[port(port="serve-80-tcp", protocol=TCP)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-ns-selector-80",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  fail = new_reachability()  # reachabilityFAIL
  fail.expect_all_ingress(pod(nsX, "a"), False)
  return one("ingress-from-namespace-on-one-named-port", it, [(policy, nsX)],
             [case(TCP, 80, r), case(TCP, 81, fail)])


@scenario
def egress_on_one_named_port():
  it = "should allow egress access on one named port"
  rule = egress_rule(ports=[port(port="serve-80-tcp")])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-egress", {},
                                                            set_spec_egress_rules(rule))
  r80 = new_reachability()
  r81 = new_reachability()
  r81.expect_peer(Peer(namespace=nsX), Peer(), False)
  return one("egress-on-one-named-port", it, [(policy, nsX)],
             [case(TCP, 80, r80), case(TCP, 81, r81)])


@scenario
def updated_policy():
  it = "should enforce updated policy"
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-all-mutate-to-deny-all", {}, set_spec_ingress_rules(ingress_rule()))
  r = new_reachability()
  # part 2) policy.Spec.Ingress = []NetworkPolicyIngressRule{}; UpdatePolicy(...)
  updated = in_namespace(policy, nsX)
  updated["spec"]["ingress"] = []
  deny = new_reachability()
  deny.expect_peer(Peer(), Peer(namespace=nsX), False)
  before, after = "updated-policy-before", "updated-policy-after"
  s1 = src(it, step="step 1 of 2: allow-all-mutate-to-deny-all allows all ingress")
  s2 = src(it, step="step 2 of 2: after UpdatePolicy with spec.ingress emptied")
  return [
      File(before, s1, [(policy, nsX)], [expectation(before, s1, cases=[case(TCP, 81, r)])]),
      File(after, s2, [(updated, nsX)], [expectation(after, s2, cases=[case(TCP, 81, deny)])]),
  ]


@scenario
def ingress_from_updated_namespace():
  it = "should allow ingress access from updated namespace"
  allowed = selector(match_labels={"ns2": "updated"})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-ns-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  # AddNamespaceLabel(ctx, k8s, nsY, "ns2", "updated")
  labelled = MODEL.with_namespace_labels(nsY, {"ns2": "updated"})
  with_label = new_reachability()
  with_label.expect_all_ingress(pod(nsX, "a"), False)
  with_label.expect_peer(Peer(namespace=nsY), Peer(), True)
  before, after = "ingress-from-updated-namespace-before", "ingress-from-updated-namespace-after"
  s1 = src(it, step="step 1 of 2: namespace y has no ns2 label")
  s2 = src(it, step='step 2 of 2: after AddNamespaceLabel(y, "ns2", "updated")')
  return [
      File(before, s1, [(policy, nsX)], [expectation(before, s1, cases=[case(TCP, 80, r)])]),
      File(after, s2, [(policy, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, with_label)])], model=labelled),
  ]


@scenario
def ingress_from_updated_pod():
  it = "should allow ingress access from updated pod"
  match_labels = {"pod": "b", "pod2": "updated"}
  rule = ingress_rule(from_=[peer(pod_selector=selector(match_labels=match_labels))])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-pod-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  # AddPodLabels(ctx, k8s, nsX, "b", matchLabels)
  labelled = MODEL.with_pod_labels(pod(nsX, "b"), match_labels)
  with_label = new_reachability()
  with_label.expect_all_ingress(pod(nsX, "a"), False)
  with_label.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  before, after = "ingress-from-updated-pod-before", "ingress-from-updated-pod-after"
  s1 = src(it, step="step 1 of 2: x/b has only pod=b")
  s2 = src(it, step='step 2 of 2: after AddPodLabels(x/b, {pod: b, pod2: updated})')
  return [
      File(before, s1, [(policy, nsX)], [expectation(before, s1, cases=[case(TCP, 80, r)])]),
      File(after, s2, [(policy, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, with_label)])], model=labelled),
  ]


@scenario
def deny_ingress_from_other_namespaces():
  it = "should deny ingress from pods on other namespaces"
  rule = ingress_rule(from_=[peer(pod_selector=selector())])
  policy = gen_network_policy_with_name_and_pod_selector("deny-empty-policy", selector(),
                                                         set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsY), Peer(namespace=nsX), False)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX), False)
  return one("deny-ingress-from-other-namespaces", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def deny_ingress_to_updated_pod():
  it = "should deny ingress access to updated pod"
  policy = gen_network_policy_with_name_and_pod_selector(
      "deny-ingress-via-label-selector", selector(match_labels={"target": "isolated"}),
      set_spec_ingress_rules())
  r = new_reachability()
  # AddPodLabels(ctx, k8s, nsX, "a", map[string]string{"target": "isolated"}) adds the label.
  labelled = MODEL.with_pod_labels(pod(nsX, "a"), {"target": "isolated"})
  isolated = new_reachability()
  isolated.expect_all_ingress(pod(nsX, "a"), False)
  before, after = "deny-ingress-to-updated-pod-before", "deny-ingress-to-updated-pod-after"
  s1 = src(it, step="step 1 of 2: x/a has only pod=a")
  s2 = src(it, step='step 2 of 2: after AddPodLabels(x/a, {target: isolated})')
  return [
      File(before, s1, [(policy, nsX)], [expectation(before, s1, cases=[case(TCP, 80, r)])]),
      File(after, s2, [(policy, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, isolated)])], model=labelled),
  ]


@scenario
def deny_egress_by_pod_selector():
  it = "should deny egress from pods based on PodSelector"
  policy = gen_network_policy_with_name_and_pod_selector(
      "deny-egress-pod-a", selector(match_labels={"pod": "a"}), set_spec_egress_rules())
  r = new_reachability()
  r.expect_all_egress(pod(nsX, "a"), False)
  return one("deny-egress-by-pod-selector", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def deny_egress_from_namespace():
  it = "should deny egress from all pods in a namespace"
  policy = gen_network_policy_with_name_and_pod_selector("deny-egress-ns-x", selector(),
                                                         set_spec_egress_rules())
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(), False)
  return one("deny-egress-from-all-pods-in-namespace", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def ingress_and_egress_together():
  it = "should work with Ingress, Egress specified together"
  allowed = selector(match_labels={"pod": "b"})
  rule = ingress_rule(from_=[peer(pod_selector=allowed)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-client-a-via-pod-selector",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  # add an egress rule on to it... (port 80, no protocol: "don't use named ports")
  policy["spec"]["egress"] = [egress_rule(ports=[port(port=80)])]
  policy["spec"]["policyTypes"] = ["Egress", "Ingress"]
  r80 = new_reachability()
  r80.expect_all_ingress(pod(nsX, "a"), False)
  r80.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  r81 = new_reachability()
  r81.expect_all_ingress(pod(nsX, "a"), False)
  r81.expect_all_egress(pod(nsX, "a"), False)
  r81.expect(pod(nsX, "b"), pod(nsX, "a"), True)
  return one("ingress-and-egress-together", it, [(policy, nsX)],
             [case(TCP, 80, r80), case(TCP, 81, r81)])


@scenario
def deny_egress_on_client_side():
  it = ("should support denying of egress traffic on the client side (even if the server "
        "explicitly allows this traffic)")
  egress_ns = selector(match_labels={NS_LABEL: nsY})
  egress_pods = selector(match_labels={"pod": "a"})
  egress1 = egress_rule(to=[peer(namespace_selector=egress_ns, pod_selector=egress_pods)])
  egress_policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-to-ns-y-pod-a", {"pod": "a"}, set_spec_egress_rules(egress1))
  ingress_ns = selector(match_labels={NS_LABEL: nsX})
  ingress_pods = selector(match_labels={"pod": "a"})
  rule = ingress_rule(from_=[peer(namespace_selector=ingress_ns, pod_selector=ingress_pods)])
  allow_a = gen_network_policy_with_name_and_pod_match_label(
      "allow-from-xa-on-ya-match-selector", {"pod": "a"}, set_spec_ingress_rules(rule))
  allow_b = gen_network_policy_with_name_and_pod_match_label(
      "allow-from-xa-on-yb-match-selector", {"pod": "b"}, set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX, pod="a"), Peer(), False)
  r.expect_peer(Peer(), Peer(namespace=nsY, pod="a"), False)
  r.expect_peer(Peer(namespace=nsX, pod="a"), Peer(namespace=nsY, pod="a"), True)
  r.expect_peer(Peer(), Peer(namespace=nsY, pod="b"), False)
  return one("deny-egress-on-client-side", it,
             [(egress_policy, nsX), (allow_a, nsY), (allow_b, nsY)], [case(TCP, 80, r)])


@scenario
def egress_to_pod_in_different_namespace():
  it = ("should enforce egress policy allowing traffic to a server in a different namespace "
        "based on PodSelector and NamespaceSelector")
  allowed_ns = selector(match_labels={NS_LABEL: nsY})
  allowed_pods = selector(match_labels={"pod": "a"})
  egress1 = egress_rule(to=[peer(namespace_selector=allowed_ns, pod_selector=allowed_pods)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-to-ns-y-pod-a", {"pod": "a"},
                                                            set_spec_egress_rules(egress1))
  r = new_reachability()
  r.expect_all_egress(pod(nsX, "a"), False)
  r.expect(pod(nsX, "a"), pod(nsY, "a"), True)
  return one("egress-to-pod-in-different-namespace", it, [(policy, nsX)], [case(TCP, 80, r)])


@scenario
def ingress_any_port_on_protocol():
  it = ("should enforce ingress policy allowing any port traffic to a server on a specific "
        "protocol")
  rule = ingress_rule(ports=[port(protocol=TCP)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-ingress-by-proto",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  rtcp = new_reachability()
  rudp = new_reachability()
  rudp.expect_peer(Peer(), Peer(namespace=nsX, pod="a"), False)
  return one("ingress-any-port-on-protocol", it, [(policy, nsX)],
             [case(TCP, 80, rtcp), case(UDP, 80, rudp)])


@scenario
def ingress_allow_all_precedence():
  it = "should enforce multiple ingress policies with ingress allow-all policy taking precedence"
  rules = ingress_rule(ports=[port(port=80)])
  only80 = gen_network_policy_with_name_and_pod_match_label("allow-ingress-port-80", {},
                                                            set_spec_ingress_rules(rules))
  r = new_reachability()
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  allow_all = gen_network_policy_with_name_and_pod_match_label(
      "allow-ingress", {}, set_spec_ingress_rules(ingress_rule()))
  r_all = new_reachability()
  before = "ingress-allow-all-takes-precedence-before"
  after = "ingress-allow-all-takes-precedence-after"
  s1 = src(it, step="step 1 of 2: only allow-ingress-port-80 exists")
  s2 = src(it, step="step 2 of 2: after CreatePolicy(allow-ingress)")
  return [
      File(before, s1, [(only80, nsX)], [expectation(before, s1, cases=[case(TCP, 81, r)])]),
      File(after, s2, [(only80, nsX), (allow_all, nsX)],
           [expectation(after, s2, cases=[case(TCP, 81, r_all)])]),
  ]


@scenario
def egress_allow_all_precedence():
  it = "should enforce multiple egress policies with egress allow-all policy taking precedence"
  rule = egress_rule(ports=[port(port=80)])
  only80 = gen_network_policy_with_name_and_pod_match_label("allow-egress-port-80", {},
                                                            set_spec_egress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(), False)
  allow_all = gen_network_policy_with_name_and_pod_match_label(
      "allow-egress", {}, set_spec_egress_rules(egress_rule()))
  r_all = new_reachability()
  before = "egress-allow-all-takes-precedence-before"
  after = "egress-allow-all-takes-precedence-after"
  s1 = src(it, step="step 1 of 2: only allow-egress-port-80 exists")
  s2 = src(it, step="step 2 of 2: after CreatePolicy(allow-egress)")
  return [
      File(before, s1, [(only80, nsX)], [expectation(before, s1, cases=[case(TCP, 81, r)])]),
      File(after, s2, [(only80, nsX), (allow_all, nsX)],
           [expectation(after, s2, cases=[case(TCP, 81, r_all)])]),
  ]


@scenario
def stop_enforcing_after_delete():
  it = "should stop enforcing policies after they are deleted"
  policy = gen_network_policy_with_name_and_pod_selector(
      "deny-all", selector(), set_spec_ingress_rules(), set_spec_egress_rules())
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(), False)
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  r_all = new_reachability()
  before = "stop-enforcing-after-delete-before"
  after = "stop-enforcing-after-delete-after"
  s1 = src(it, step="step 1 of 2: deny-all exists in x")
  s2 = src(it, step="step 2 of 2: after cleanNetworkPolicies (no policies left)")
  return [
      File(before, s1, [(policy, nsX)], [expectation(before, s1, cases=[case(TCP, 80, r)])]),
      File(after, s2, [], [expectation(after, s2, cases=[case(TCP, 80, r_all)])]),
  ]


ALL_ADDRESSES = {"ipBlockScope": "AllAddresses"}


def host_cidr(ip):  # fmt.Sprintf("%s/%d", pod.Status.PodIP, hostMask)
  return "%s/%d" % (ip, 128 if ":" in ip else 32)


def make_large_cidr_for_ip(ip):
  """upstream makeLargeCIDRForIP: the /4 that contains the IP, host bits cleared."""
  a = [int(x) for x in ip.split(".")]
  return "%d.0.0.0/4" % (a[0] & 0xF0)


@scenario
def egress_to_cidr():
  it = "should allow egress access to server in CIDR block"
  # pod y/b's status.podIP (the IPv4 of the dual-stack pair).
  pod_server_cidr = host_cidr(MODEL.ip(pod(nsY, "b")))
  egress1 = egress_rule(to=[peer(ip_block=ip_block(pod_server_cidr))])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-client-a-via-cidr-egress-rule", {"pod": "a"}, set_spec_egress_rules(egress1))
  r = new_reachability()
  r.expect_all_egress(pod(nsX, "a"), False)
  r.expect(pod(nsX, "a"), pod(nsY, "b"), True)
  return one("egress-to-cidr", it, [(policy, nsX)], [case(TCP, 80, r)], options=ALL_ADDRESSES)


@scenario
def egress_cidr_except():
  it = "should enforce except clause while egress access to server in CIDR block"
  pod_b_ip = MODEL.ip(pod(nsX, "b"))
  allow_cidr = make_large_cidr_for_ip(pod_b_ip)
  except_list = [host_cidr(pod_b_ip)]
  egress1 = egress_rule(to=[peer(ip_block=ip_block(allow_cidr, except_list))])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-client-a-via-cidr-egress-rule", {"pod": "a"}, set_spec_egress_rules(egress1))
  r = new_reachability()
  r.expect(pod(nsX, "a"), pod(nsX, "b"), False)
  return one("egress-cidr-except", it, [(policy, nsX)], [case(TCP, 80, r)],
             options=ALL_ADDRESSES)


@scenario
def cidr_and_except_overlap():
  it = "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"
  pod_b_ip = MODEL.ip(pod(nsX, "b"))
  allow_cidr = make_large_cidr_for_ip(pod_b_ip)
  except_list = [host_cidr(pod_b_ip)]
  egress1 = egress_rule(to=[peer(ip_block=ip_block(allow_cidr, except_list))])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-client-a-via-cidr-egress-rule", {"pod": "a"}, set_spec_egress_rules(egress1))
  r = new_reachability()
  r.expect(pod(nsX, "a"), pod(nsX, "b"), False)
  # Second policy with the same name, applied with UpdatePolicy: it replaces the first.
  egress3 = egress_rule(to=[peer(ip_block=ip_block(host_cidr(pod_b_ip)))])
  allow_policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-client-a-via-cidr-egress-rule", {"pod": "a"}, set_spec_egress_rules(egress3))
  r_allow = new_reachability()
  r_allow.expect_all_egress(pod(nsX, "a"), False)
  r_allow.expect(pod(nsX, "a"), pod(nsX, "b"), True)
  before, after = "cidr-and-except-overlap-before", "cidr-and-except-overlap-after"
  s1 = src(it, step="step 1 of 2: ipBlock %s except %s" % (allow_cidr, except_list[0]))
  s2 = src(it, step="step 2 of 2: after UpdatePolicy to ipBlock %s" % host_cidr(pod_b_ip))
  return [
      File(before, s1, [(policy, nsX)],
           [expectation(before, s1, cases=[case(TCP, 80, r)], options=ALL_ADDRESSES)]),
      File(after, s2, [(allow_policy, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, r_allow)], options=ALL_ADDRESSES)]),
  ]


@scenario
def ingress_and_egress_independent():
  it = ("should enforce policies to check ingress and egress policies can be controlled "
        "independently based on PodSelector")
  target = {"pod": "a"}
  allow_egress = gen_network_policy_with_name_and_pod_selector(
      "allow-egress-for-target", selector(match_labels=target),
      set_spec_egress_rules(egress_rule()))
  r1 = new_reachability()
  deny_ingress = gen_network_policy_with_name_and_pod_selector(
      "deny-ingress-via-label-selector", selector(match_labels=target), set_spec_ingress_rules())
  r2 = new_reachability()
  r2.expect_all_ingress(pod(nsX, "a"), False)
  before = "ingress-and-egress-independent-before"
  after = "ingress-and-egress-independent-after"
  s1 = src(it, step="step 1 of 2: only allow-egress-for-target exists")
  s2 = src(it, step="step 2 of 2: after CreatePolicy(deny-ingress-via-label-selector)")
  return [
      File(before, s1, [(allow_egress, nsX)],
           [expectation(before, s1, cases=[case(TCP, 80, r1)])]),
      File(after, s2, [(allow_egress, nsX), (deny_ingress, nsX)],
           [expectation(after, s2, cases=[case(TCP, 80, r2)])]),
  ]


@scenario
def sctp_not_treated_as_tcp():
  it = ("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin "
        "doesn't support SCTP")
  deny = gen_network_policy_with_name_and_pod_selector("deny-ingress", selector(),
                                                       set_spec_ingress_rules())
  rule = ingress_rule(ports=[port(port=81, protocol=SCTP)])
  allow = gen_network_policy_with_name_and_pod_match_label("allow-only-sctp-ingress-on-port-81",
                                                           {"pod": "a"},
                                                           set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  return one("sctp-not-treated-as-tcp", it, [(deny, nsX), (allow, nsX)], [case(TCP, 81, r)])


@scenario
def isolate_pods_selected_by_sctp_policy():
  it = ("should properly isolate pods that are selected by a policy allowing SCTP, even if the "
        "plugin doesn't support SCTP")
  rule = ingress_rule(ports=[port(port=80, protocol=SCTP)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-only-sctp-ingress-on-port-80",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  return one("isolate-pods-selected-by-sctp-policy", it, [(policy, nsX)], [case(TCP, 81, r)])


@scenario
def tcp_denied_when_policy_only_udp():
  it = "should not allow access by TCP when a policy specifies only UDP"
  rule = ingress_rule(ports=[port(port=81, protocol=UDP)])
  policy = gen_network_policy_with_name_and_pod_match_label("allow-only-udp-ingress-on-port-81",
                                                            {"pod": "a"},
                                                            set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_all_ingress(pod(nsX, "a"), False)
  return one("tcp-denied-when-policy-only-udp", it, [(policy, nsX)], [case(TCP, 81, r)])


@scenario
def namespace_selector_default_label_match_labels():
  it = ("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using "
        "default ns label")
  allowed = selector(match_labels={NS_LABEL: nsY})
  rule = ingress_rule(from_=[peer(namespace_selector=allowed)])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-client-a-via-ns-selector-for-immutable-ns-label", {"pod": "a"},
      set_spec_ingress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX), Peer(namespace=nsX, pod="a"), False)
  r.expect_peer(Peer(namespace=nsZ), Peer(namespace=nsX, pod="a"), False)
  return one("namespace-selector-default-label-match-labels", it, [(policy, nsX)],
             [case(TCP, 80, r)])


@scenario
def namespace_selector_default_label_match_expressions():
  it = ("should enforce policy based on NamespaceSelector with MatchExpressions using default ns "
        "label")
  allowed = selector(match_expressions=[(NS_LABEL, "NotIn", [nsY])])
  rule = egress_rule(to=[peer(namespace_selector=allowed)])
  policy = gen_network_policy_with_name_and_pod_match_label(
      "allow-ns-y-match-selector-for-immutable-ns-label", {"pod": "a"},
      set_spec_egress_rules(rule))
  r = new_reachability()
  r.expect_peer(Peer(namespace=nsX, pod="a"), Peer(namespace=nsY), False)
  return one("namespace-selector-default-label-match-expressions", it, [(policy, nsX)],
             [case(TCP, 80, r)])


# =============================================================================================
# Context("NetworkPolicy between server and client using UDP") and "... using SCTP"


def _default_deny_ingress_for(protocol, context, name):
  it = "should support a 'default-deny-ingress' policy"
  policy = gen_network_policy_with_name_and_pod_selector("deny-all", selector(),
                                                         set_spec_ingress_rules())
  r = new_reachability()
  r.expect_peer(Peer(), Peer(namespace=nsX), False)
  return one(name, it, [(policy, nsX)], [case(protocol, 80, r)], context=context)


@scenario
def udp_default_deny_ingress():
  return _default_deny_ingress_for(UDP, CTX_UDP, "udp-default-deny-ingress")


@scenario
def udp_ports():
  return _ports("udp-ports", UDP, "allow-ingress-on-port-81-ns-x", CTX_UDP, False)


@scenario
def udp_allow_only_from_pod_in_different_namespace():
  return _allow_ns_y_pod_a(
      "should enforce policy to allow traffic only from a pod in a different namespace based on "
      "PodSelector and NamespaceSelector",
      "udp-allow-only-from-pod-in-different-namespace", UDP, 80, CTX_UDP)


@scenario
def sctp_default_deny_ingress():
  return _default_deny_ingress_for(SCTP, CTX_SCTP, "sctp-default-deny-ingress")


@scenario
def sctp_ports():
  return _ports("sctp-ports", SCTP, "allow-ingress-on-port-81-ns-x", CTX_SCTP, False)


@scenario
def sctp_allow_only_from_pod_in_different_namespace():
  return _allow_ns_y_pod_a(
      "should enforce policy to allow traffic only from a pod in a different namespace based on "
      "PodSelector and NamespaceSelector",
      "sctp-allow-only-from-pod-in-different-namespace", SCTP, 80, CTX_SCTP)


# =============================================================================================
# endPort: upstream's only merged endPort e2e test is an API-validation test (network_policy_api.go
# "should support creating NetworkPolicy API with endport field"). The connectivity tests below
# were proposed in kubernetes/kubernetes PR #100291, which was closed without merging; they are
# kept, labelled as such, because they are upstream contributors' expectations for endPort between
# pods. Their model (getK8SModelForEndPort) has containers on TCP and UDP ports 111-115; we add 116
# (TCP and UDP) so that the port-116 expectations can be probed. No policy names a port, so the
# extra container cannot change a verdict.

ENDPORT_MODEL = upstream_model(ports=(111, 112, 113, 114, 115, 116), protocols=("TCP", "UDP"))


def _endport(direction):
  it = "should enforce policy to allow %s traffic using port range" % direction
  source = '%s It("%s [Feature:NetworkPolicy]")' % (PR_ENDPORT, it)
  pods = ENDPORT_MODEL.pod_names()
  if direction == "ingress":
    rule = ingress_rule(ports=[port(port=111, end_port=115)])
    policy = gen_network_policy_with_name_and_pod_match_label(
        "allow-ingress-use-port-range", {"pod": "a"}, set_spec_ingress_rules(rule))
  else:
    rule = egress_rule(ports=[port(port=111, end_port=115)])
    policy = gen_network_policy_with_name_and_pod_match_label(
        "allow-egress-use-port-range", {"pod": "a"}, set_spec_egress_rules(rule))
  r_in = Reachability(pods, True)  # reachability111To115
  r_out = Reachability(pods, True)  # reachability116
  if direction == "ingress":
    r_in.expect_all_ingress(pod(nsX, "a"), True)
    r_out.expect_all_ingress(pod(nsX, "a"), False)
  else:
    r_in.expect_all_egress(pod(nsX, "a"), True)
    r_out.expect_all_egress(pod(nsX, "a"), False)
  cases = [case(TCP, p, r_in) for p in (111, 112, 113, 114, 115)] + [case(TCP, 116, r_out)]
  name = "pr100291-%s-port-range" % direction
  return [File(name, source, [(policy, nsX)], [expectation(name, source, cases=cases)],
               model=ENDPORT_MODEL)]


@scenario
def pr100291_ingress_port_range():
  return _endport("ingress")


@scenario
def pr100291_egress_port_range():
  return _endport("egress")


# =============================================================================================


def main():
  files = []
  for fn in SCENARIOS:
    files.extend(fn())
  names = [f.name for f in files]
  assert len(names) == len(set(names)), "duplicate file names"
  for old in glob.glob(os.path.join(HERE, "*.yaml")):
    os.remove(old)
  for f in files:
    docs = f.model.documents() + [in_namespace(p, ns) for p, ns in f.policies] + f.expectations
    header = ("Generated by testdata/upstream/gen.py -- do not edit; edit gen.py and rerun.\n"
              "Scenario: %s\n"
              "Cluster: namespaces x, y, z; pods a, b, c (labels pod=<name>); IPs per README.md.\n"
              % f.source)
    write_documents(os.path.join(HERE, f.name + ".yaml"), header, docs)
  print("wrote %d files" % len(files))


if __name__ == "__main__":
  main()
