#!/usr/bin/python3 -B
"""Writes testdata/docs/*.yaml: the examples of the Kubernetes NetworkPolicy documentation with
expectations taken from the documentation's own prose (quoted in each scenario's `source`).

Pages:
  CONCEPT = https://kubernetes.io/docs/concepts/services-networking/network-policies/
            (kubernetes/website content/en/docs/concepts/services-networking/network-policies.md)
  TASK    = https://kubernetes.io/docs/tasks/administer-cluster/declare-network-policy/
The example policies are the page's YAML (content/en/examples/service/networking/*.yaml) as
published; where the page shows only a fragment ("..."), the rest is chosen here and said so.
The clusters around them are invented here, each pod and namespace named for its role. Pod IPs
follow the scheme in ../upstream/README.md (10.N.0.P / fd00:10:N::P); none of them falls in an
ipBlock of the examples, so ipBlocks are exercised with cluster-external addresses only, as the
page recommends. External addresses in flows are documentation ranges unless the example names
its own (172.17.0.0/16, 10.0.0.0/24).

Usage: /usr/bin/python3 -B testdata/docs/gen.py
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "upstream"))
from npgen import *  # noqa: E402,F401,F403

CONCEPT = "kubernetes.io/docs/concepts/services-networking/network-policies"
TASK = "kubernetes.io/docs/tasks/administer-cluster/declare-network-policy"
TCP, UDP = "TCP", "UDP"


def http(port_number=80, name="http"):
  return [("app", "registry.k8s.io/e2e-test-images/agnhost:2.53", [(name, port_number, TCP)])]


class File(object):
  def __init__(self, name, source, model, policies, expectations):
    self.name, self.source, self.model = name, source, model
    self.policies, self.expectations = policies, expectations


SCENARIOS = []


def scenario(fn):
  SCENARIOS.append(fn)
  return fn


def policy(name, namespace, spec):
  return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": name, "namespace": namespace}, "spec": spec}


# ---------------------------------------------------------------------------------------------
# "The NetworkPolicy resource": test-network-policy (examples/service/networking/networkpolicy.yaml)


@scenario
def test_network_policy():
  source = (CONCEPT + ' "The NetworkPolicy resource": the example test-network-policy '
            "isolates role=db pods in default for ingress and egress; allows connections to "
            "them on TCP 6379 from any pod in default with role=frontend, any pod in a namespace "
            "with project=myproject, and IP addresses in 172.17.0.0-172.17.0.255 and "
            "172.17.2.0-172.17.255.255; allows connections from them to CIDR 10.0.0.0/24 on TCP "
            "5978.")
  model = Model([
      ("default", {}, [("db", {"role": "db"}, http(6379, "redis")),
                       ("frontend", {"role": "frontend"}, http()),
                       ("backend", {"role": "backend"}, http())]),
      ("myproject", {"project": "myproject"}, [("client", {"app": "client"}, http())]),
      ("other", {}, [("frontend", {"role": "frontend"}, http())]),
  ])
  spec = {
      "podSelector": selector(match_labels={"role": "db"}),
      "policyTypes": ["Ingress", "Egress"],
      "ingress": [{
          "from": [
              peer(ip_block=ip_block("172.17.0.0/16", ["172.17.1.0/24"])),
              peer(namespace_selector=selector(match_labels={"project": "myproject"})),
              peer(pod_selector=selector(match_labels={"role": "frontend"})),
          ],
          "ports": [port(protocol=TCP, port=6379)],
      }],
      "egress": [{
          "to": [peer(ip_block=ip_block("10.0.0.0/24"))],
          "ports": [port(protocol=TCP, port=5978)],
      }],
  }
  pods = model.pod_names()
  db = "default/db"
  # TCP 6379: ingress to db only from the three listed sources; db's own egress only to
  # 10.0.0.0/24:5978, so db reaches no pod. Everything else is not isolated.
  r6379 = Reachability(pods, True)
  r6379.expect_all_ingress(db, False)
  r6379.expect("default/frontend", db, True)
  r6379.expect("myproject/client", db, True)
  r6379.expect_all_egress(db, False)
  # TCP 5978: db accepts only 6379, and reaches only 10.0.0.0/24 (no pod is there).
  r5978 = Reachability(pods, True)
  r5978.expect_all_ingress(db, False)
  r5978.expect_all_egress(db, False)
  flows = [
      flow("172.17.0.1", db, TCP, 6379, True),
      flow("172.17.0.255", db, TCP, 6379, True),
      flow("172.17.1.0", db, TCP, 6379, False),
      flow("172.17.1.77", db, TCP, 6379, False),
      flow("172.17.1.255", db, TCP, 6379, False),
      flow("172.17.2.0", db, TCP, 6379, True),
      flow("172.17.255.255", db, TCP, 6379, True),
      flow("172.16.255.255", db, TCP, 6379, False),
      flow("172.18.0.0", db, TCP, 6379, False),
      flow("172.17.0.1", db, TCP, 6380, False),
      flow("172.17.0.1", db, UDP, 6379, False),
      flow(db, "10.0.0.1", TCP, 5978, True),
      flow(db, "10.0.0.255", TCP, 5978, True),
      flow(db, "10.0.1.0", TCP, 5978, False),
      flow(db, "10.0.0.1", TCP, 5979, False),
      flow(db, "10.0.0.1", UDP, 5978, False),
      flow(db, "203.0.113.7", TCP, 5978, False),
      # Pods the policy does not select stay non-isolated.
      flow("203.0.113.7", "default/frontend", TCP, 80, True),
      flow("default/frontend", "203.0.113.7", TCP, 443, True),
  ]
  name = "test-network-policy"
  return [File(name, source, model, [policy("test-network-policy", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 6379, r6379), case(TCP, 5978, r5978)],
                            flows=flows)])]


# ---------------------------------------------------------------------------------------------
# "Default policies"


def default_model():
  return Model([
      ("default", {}, [("web", {"app": "web"}, http()), ("db", {"app": "db"}, http())]),
      ("other", {}, [("client", {"app": "client"}, http())]),
  ])


DEFAULT_DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
DEFAULT_DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}
ALLOW_ALL_EGRESS = {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}
DEFAULT_DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
EXTERNAL = "203.0.113.10"


def _default_file(name, source, policies, ingress_denied, egress_denied, options=None,
                  allow_self=False):
  model = default_model()
  pods = model.pod_names()
  r = Reachability(pods, True, check_loopback=allow_self)
  if ingress_denied:
    r.expect_peer(Peer(), Peer(namespace="default"), False)
  if egress_denied:
    r.expect_peer(Peer(namespace="default"), Peer(), False)
  if allow_self:
    r.allow_loopback()
  flows = [
      flow(EXTERNAL, "default/web", TCP, 80, not ingress_denied),
      flow("default/web", EXTERNAL, TCP, 443, not egress_denied),
      flow(EXTERNAL, "other/client", TCP, 80, True),
      flow("other/client", EXTERNAL, TCP, 443, True),
  ]
  return [File(name, source, model, [policy(n, "default", s) for n, s in policies],
               [expectation(name, source, cases=[case(TCP, 80, r), case(UDP, 53, r)],
                            flows=flows, options=options)])]


@scenario
def default_deny_ingress():
  source = (CONCEPT + ' "Default deny all ingress traffic": a policy that selects all pods but '
            "does not allow any ingress traffic to those pods; they are isolated for ingress. "
            "This policy does not affect isolation for egress from any pod.")
  return _default_file("default-deny-ingress", source,
                       [("default-deny-ingress", DEFAULT_DENY_INGRESS)], True, False)


@scenario
def allow_all_ingress():
  source = (CONCEPT + ' "Allow all ingress traffic": a policy that explicitly allows all '
            "incoming connections to all pods in a namespace. It has no effect on isolation for "
            "egress from any pod.")
  return _default_file("allow-all-ingress", source, [("allow-all-ingress", ALLOW_ALL_INGRESS)],
                       False, False)


@scenario
def allow_all_ingress_with_deny():
  source = (CONCEPT + ' "Allow all ingress traffic": with this policy in place, no additional '
            "policy or policies can cause any incoming connection to those pods to be denied. "
            "(Here the additional policy is the page's default-deny-ingress.)")
  return _default_file("allow-all-ingress-overrides-default-deny", source,
                       [("allow-all-ingress", ALLOW_ALL_INGRESS),
                        ("default-deny-ingress", DEFAULT_DENY_INGRESS)], False, False)


@scenario
def default_deny_egress():
  source = (CONCEPT + ' "Default deny all egress traffic": a policy that selects all pods but '
            "does not allow any egress traffic from those pods. This policy does not change the "
            "ingress isolation behavior of any pod.")
  return _default_file("default-deny-egress", source,
                       [("default-deny-egress", DEFAULT_DENY_EGRESS)], False, True)


@scenario
def allow_all_egress():
  source = (CONCEPT + ' "Allow all egress traffic": a policy that explicitly allows all '
            "outgoing connections from pods in that namespace. It has no effect on isolation for "
            "ingress to any pod.")
  return _default_file("allow-all-egress", source, [("allow-all-egress", ALLOW_ALL_EGRESS)],
                       False, False)


@scenario
def allow_all_egress_with_deny():
  source = (CONCEPT + ' "Allow all egress traffic": with this policy in place, no additional '
            "policy or policies can cause any outgoing connection from those pods to be denied. "
            "(Here the additional policy is the page's default-deny-egress.)")
  return _default_file("allow-all-egress-overrides-default-deny", source,
                       [("allow-all-egress", ALLOW_ALL_EGRESS),
                        ("default-deny-egress", DEFAULT_DENY_EGRESS)], False, False)


@scenario
def default_deny_all():
  source = (CONCEPT + ' "Default deny all ingress and all egress traffic": prevents all '
            "ingress AND egress traffic; even pods that aren't selected by any other "
            "NetworkPolicy will not be allowed ingress or egress traffic.")
  return _default_file("default-deny-all", source, [("default-deny-all", DEFAULT_DENY_ALL)],
                       True, True)


@scenario
def pod_cannot_block_itself():
  source = (CONCEPT + " (overview): the entities a Pod can communicate with include other pods "
            "that are allowed (exception: a pod cannot block access to itself). Checked with "
            "options.alwaysAllowSelf = true, under the page's default-deny-all.")
  return _default_file("pod-cannot-block-itself", source,
                       [("default-deny-all", DEFAULT_DENY_ALL)], True, True,
                       options={"alwaysAllowSelf": True}, allow_self=True)


# ---------------------------------------------------------------------------------------------
# "Targeting a range of ports" (examples/service/networking/networkpolicy-multiport-egress.yaml)


@scenario
def multi_port_egress():
  source = (CONCEPT + ' "Targeting a range of ports": the rule allows any Pod with label '
            "role=db on the namespace default to communicate with any IP within the range "
            "10.0.0.0/24 over TCP, provided that the target port is between the range 32000 and "
            "32768.")
  model = Model([
      ("default", {}, [("db", {"role": "db"}, http(6379, "redis")),
                       ("web", {"role": "web"}, http())]),
  ])
  spec = {
      "podSelector": selector(match_labels={"role": "db"}),
      "policyTypes": ["Egress"],
      "egress": [{
          "to": [peer(ip_block=ip_block("10.0.0.0/24"))],
          "ports": [port(protocol=TCP, port=32000, end_port=32768)],
      }],
  }
  db = "default/db"
  flows = []
  for p, ok in ((31999, False), (32000, True), (32001, True), (32500, True), (32767, True),
                (32768, True), (32769, False)):
    flows.append(flow(db, "10.0.0.9", TCP, p, ok))
  flows += [
      flow(db, "10.0.0.9", UDP, 32000, False),
      flow(db, "10.0.1.9", TCP, 32000, False),
      flow(db, "198.51.100.9", TCP, 32000, False),
      # The policy has only Egress in policyTypes: ingress to db is not isolated.
      flow("198.51.100.9", db, TCP, 6379, True),
      # Pods it does not select are not isolated.
      flow("default/web", "198.51.100.9", TCP, 32000, True),
  ]
  pods = model.pod_names()
  r = Reachability(pods, True)
  r.expect_all_egress(db, False)  # no pod IP is in 10.0.0.0/24
  name = "multi-port-egress"
  return [File(name, source, model, [policy("multi-port-egress", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 32000, r), case(TCP, 6379, r)],
                            flows=flows)])]


# ---------------------------------------------------------------------------------------------
# "Behavior of to and from selectors": namespaceSelector and podSelector in one element vs two.
# The page shows only the ingress fragment; the policy around it (name, target pods) is ours:
# it selects the role=server pods of namespace default.


def _and_or_model():
  return Model([
      ("default", {}, [("server", {"role": "server"}, http()),
                       ("client", {"role": "client"}, http()),
                       ("other", {"role": "other"}, http())]),
      ("alice", {"user": "alice"}, [("client", {"role": "client"}, http()),
                                    ("other", {"role": "other"}, http())]),
      ("bob", {"user": "bob"}, [("client", {"role": "client"}, http())]),
  ])


@scenario
def namespace_and_pod_selector():
  source = (CONCEPT + ' "Behavior of to and from selectors": a single from element with both '
            "namespaceSelector user=alice and podSelector role=client allows connections from "
            "Pods with the label role=client in namespaces with the label user=alice. (Policy "
            "name and target role=server chosen here; the page shows only the from fragment.)")
  model = _and_or_model()
  spec = {"podSelector": selector(match_labels={"role": "server"}),
          "ingress": [{"from": [peer(namespace_selector=selector(match_labels={"user": "alice"}),
                                     pod_selector=selector(match_labels={"role": "client"}))]}]}
  r = Reachability(model.pod_names(), True)
  r.expect_all_ingress("default/server", False)
  r.expect("alice/client", "default/server", True)
  name = "namespace-and-pod-selector"
  return [File(name, source, model, [policy("and-selector", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 80, r)],
                            flows=[flow("192.0.2.1", "default/server", TCP, 80, False)])])]


@scenario
def namespace_or_pod_selector():
  source = (CONCEPT + ' "Behavior of to and from selectors": two from elements '
            "(namespaceSelector user=alice; podSelector role=client) allow connections from Pods "
            "in the local Namespace with the label role=client, or from any Pod in any namespace "
            "with the label user=alice. (Policy name and target role=server chosen here.)")
  model = _and_or_model()
  spec = {"podSelector": selector(match_labels={"role": "server"}),
          "ingress": [{"from": [peer(namespace_selector=selector(match_labels={"user": "alice"})),
                                peer(pod_selector=selector(match_labels={"role": "client"}))]}]}
  r = Reachability(model.pod_names(), True)
  r.expect_all_ingress("default/server", False)
  r.expect("default/client", "default/server", True)
  r.expect("alice/client", "default/server", True)
  r.expect("alice/other", "default/server", True)
  name = "namespace-or-pod-selector"
  return [File(name, source, model, [policy("or-selector", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 80, r)],
                            flows=[flow("192.0.2.1", "default/server", TCP, 80, False)])])]


# ---------------------------------------------------------------------------------------------
# "Targeting multiple namespaces by label" and "Targeting a Namespace by its name"


@scenario
def egress_namespaces():
  source = (CONCEPT + ' "Targeting multiple namespaces by label": the Egress NetworkPolicy '
            "egress-namespaces targets more than one namespace using their labels "
            "(namespace In [frontend, backend]). (Namespace of the policy, default, chosen here.)")
  model = Model([
      ("default", {}, [("myapp", {"app": "myapp"}, http()), ("other", {"app": "other"}, http())]),
      ("frontend", {"namespace": "frontend"}, [("web", {"app": "web"}, http())]),
      ("backend", {"namespace": "backend"}, [("api", {"app": "api"}, http())]),
      ("unlabelled", {}, [("tool", {"app": "tool"}, http())]),
  ])
  spec = {"podSelector": selector(match_labels={"app": "myapp"}),
          "policyTypes": ["Egress"],
          "egress": [{"to": [peer(namespace_selector=selector(
              match_expressions=[("namespace", "In", ["frontend", "backend"])]))]}]}
  r = Reachability(model.pod_names(), True)
  r.expect_all_egress("default/myapp", False)
  r.expect("default/myapp", "frontend/web", True)
  r.expect("default/myapp", "backend/api", True)
  name = "egress-namespaces-by-label"
  return [File(name, source, model, [policy("egress-namespaces", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 80, r), case(UDP, 53, r)],
                            flows=[flow("default/myapp", "192.0.2.1", TCP, 80, False)])])]


@scenario
def namespace_by_name():
  source = (CONCEPT + ' "Targeting a Namespace by its name": the control plane sets an '
            "immutable label kubernetes.io/metadata.name on all namespaces, the value of the "
            "label is the namespace name; use it to target a specific namespace. (Policy chosen "
            "here. The namespaces are written without that label, as a user writes them: the API "
            "server adds it; namespace impostor carries name=monitoring, which is not the "
            "standardized label.)")
  model = Model([
      ("default", {}, [("web", {"app": "web"}, http())]),
      ("monitoring", {}, [("prometheus", {"app": "prometheus"}, http())]),
      ("impostor", {"name": "monitoring"}, [("prometheus", {"app": "prometheus"}, http())]),
  ], explicit_name_label=False)
  spec = {"podSelector": selector(match_labels={"app": "web"}),
          "policyTypes": ["Ingress"],
          "ingress": [{"from": [peer(namespace_selector=selector(
              match_labels={"kubernetes.io/metadata.name": "monitoring"}))]}]}
  r = Reachability(model.pod_names(), True)
  r.expect_all_ingress("default/web", False)
  r.expect("monitoring/prometheus", "default/web", True)
  name = "namespace-by-name-label"
  return [File(name, source, model, [policy("allow-from-monitoring", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 80, r)])])]


# ---------------------------------------------------------------------------------------------
# Task page: Declare Network Policy (examples/service/networking/nginx-policy.yaml)


@scenario
def access_nginx():
  source = (TASK + ": access-nginx limits access to the nginx pods so that only Pods with the "
            "label access=true can query them; from a Pod without the label the request times "
            "out, from a Pod with access=true it is allowed. (The page's pods run in namespace "
            "default; the nginx pod carries the label the current example policy selects, "
            "app.kubernetes.io/name=nginx.)")
  model = Model([
      ("default", {}, [("nginx", {"app.kubernetes.io/name": "nginx"}, http()),
                       ("busybox", {"run": "busybox"}, []),
                       ("busybox-access", {"run": "busybox", "access": "true"}, [])]),
  ])
  spec = {"podSelector": selector(match_labels={"app.kubernetes.io/name": "nginx"}),
          "ingress": [{"from": [peer(pod_selector=selector(match_labels={"access": "true"}))]}]}
  r = Reachability(model.pod_names(), True)
  r.expect_all_ingress("default/nginx", False)
  r.expect("default/busybox-access", "default/nginx", True)
  name = "declare-network-policy-access-nginx"
  return [File(name, source, model, [policy("access-nginx", "default", spec)],
               [expectation(name, source, cases=[case(TCP, 80, r)])])]


def main():
  files = []
  for fn in SCENARIOS:
    files.extend(fn())
  names = [f.name for f in files]
  assert len(names) == len(set(names)), "duplicate file names"
  for old in glob.glob(os.path.join(HERE, "*.yaml")):
    os.remove(old)
  for f in files:
    docs = f.model.documents() + f.policies + f.expectations
    header = ("Generated by testdata/docs/gen.py -- do not edit; edit gen.py and rerun.\n"
              "Source: %s\n" % f.source)
    write_documents(os.path.join(HERE, f.name + ".yaml"), header, docs)
  print("wrote %d files" % len(files))


if __name__ == "__main__":
  main()
