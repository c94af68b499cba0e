"""Shared pieces of the test-data generators (gen.py here, ../docs/gen.py).

Standard library only (no PyYAML here): a small block-style YAML writer, the cluster model,
NetworkPolicy constructors that mirror upstream's test/e2e/network/netpol/policies.go, and a
Reachability class that mirrors upstream's reachability.go/truthtable.go, so that the
expectations in the generators read like the upstream calls they transcribe.

Run the generators with /usr/bin/python3 -B (no __pycache__ in the tree).
"""

import os
import re

# ---------------------------------------------------------------------------------------------
# YAML writer (block style, kubectl-like layout).

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:-]*$")
_LOOKS_TYPED = re.compile(
    r"^([-+]?[0-9][0-9_.:eExXoOa-fA-F+-]*|true|false|True|False|TRUE|FALSE|yes|no|Yes|No|YES|NO|"
    r"on|off|On|Off|ON|OFF|y|n|Y|N|null|Null|NULL|~)$")


def _scalar(value):
  if value is True:
    return "true"
  if value is False:
    return "false"
  if isinstance(value, int):
    return str(value)
  text = str(value)
  if text and _PLAIN_SAFE.match(text) and not _LOOKS_TYPED.match(text) and not text.endswith(":"):
    return text
  return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Literal(str):
  """A string written as a literal block scalar with an explicit indentation indicator, so that
  a first line that starts with spaces (a table header) is kept verbatim."""


class Flow(dict):
  """A mapping written in flow style on one line: {a: 1, b: x}."""


def _flow(value):
  return "{" + ", ".join("%s: %s" % (k, _scalar(v)) for k, v in value.items()) + "}"


def _mapping_lines(mapping, indent):
  pad = " " * indent
  lines = []
  for key, value in mapping.items():
    if key.startswith("#"):  # a comment line
      lines.append(pad + "# " + value)
      continue
    if isinstance(value, Literal):
      # Content indentation = indent + 2; the indicator is relative to this mapping's indent.
      lines.append("%s%s: |2" % (pad, key))
      for text_line in value.rstrip("\n").split("\n"):
        lines.append((" " * (indent + 2) + text_line).rstrip())
    elif isinstance(value, Flow):
      lines.append("%s%s: %s" % (pad, key, _flow(value)))
    elif isinstance(value, dict):
      if not value:
        lines.append("%s%s: {}" % (pad, key))
      else:
        lines.append("%s%s:" % (pad, key))
        lines.extend(_mapping_lines(value, indent + 2))
    elif isinstance(value, list):
      if not value:
        lines.append("%s%s: []" % (pad, key))
      else:
        lines.append("%s%s:" % (pad, key))
        lines.extend(_sequence_lines(value, indent))
    else:
      lines.append("%s%s: %s" % (pad, key, _scalar(value)))
  return lines


def _sequence_lines(items, indent):
  pad = " " * indent
  lines = []
  for item in items:
    if isinstance(item, Flow):
      lines.append(pad + "- " + _flow(item))
    elif isinstance(item, dict):
      if not item:
        lines.append(pad + "- {}")
        continue
      sub = _mapping_lines(item, indent + 2)
      # The first non-comment line carries the dash.
      first = next(i for i, l in enumerate(sub) if not l.lstrip().startswith("#"))
      for i, l in enumerate(sub):
        if i == first:
          lines.append(pad + "- " + l[indent + 2:])
        else:
          lines.append(l)
    elif isinstance(item, list):
      raise ValueError("nested sequences are not used")
    else:
      lines.append(pad + "- " + _scalar(item))
  return lines


def to_yaml(document):
  return "\n".join(_mapping_lines(document, 0)) + "\n"


def documents_text(header_comment, documents):
  """A multi-document YAML file: the comment lines, then each document after a `---`."""
  parts = []
  for line in header_comment.strip("\n").split("\n"):
    parts.append(("# " + line).rstrip() + "\n")
  for doc in documents:
    parts.append("---\n")
    parts.append(to_yaml(doc))
  return "".join(parts)


def write_documents(path, header_comment, documents):
  text = documents_text(header_comment, documents)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


# ---------------------------------------------------------------------------------------------
# Cluster model.
#
# IP scheme (documented in testdata/upstream/README.md): the pod with 1-based index P inside the
# namespace with 1-based index N (in the order the file lists them) has
#   IPv4 10.N.0.P   and   IPv6 fd00:10:N::P
# status.podIPs lists IPv4 first (status.podIP is the IPv4), as a dual-stack cluster with IPv4
# primary reports them.

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def pod_ipv4(n, p):
  return "10.%d.0.%d" % (n, p)


def pod_ipv6(n, p):
  return "fd00:10:%d::%d" % (n, p)


class Model(object):
  """Namespaces and pods of one test file. Immutable-ish: the with_* methods return copies."""

  def __init__(self, namespaces, explicit_name_label=True):
    # namespaces: list of (name, labels, [(pod name, labels, containers[, extras])])
    # containers: list of (container name, image, [(port name, port, protocol)])
    self.namespaces = namespaces
    self.explicit_name_label = explicit_name_label

  def pod_names(self):
    return ["%s/%s" % (ns, pod[0]) for ns, _, pods in self.namespaces for pod in pods]

  def ip(self, pod_key, family=4):
    ns_name, pod_name = pod_key.split("/")
    for n, (ns, _, pods) in enumerate(self.namespaces, 1):
      for p, pod in enumerate(pods, 1):
        if ns == ns_name and pod[0] == pod_name:
          ipv4, ipv6 = _pod_ips(n, p, pod)
          return ipv4 if family == 4 else ipv6
    raise KeyError(pod_key)

  def with_namespace_labels(self, ns_name, labels):
    """Upstream AddNamespaceLabel: the given labels are added to the namespace's labels."""
    out = []
    for ns, ns_labels, pods in self.namespaces:
      out.append((ns, dict(ns_labels, **labels) if ns == ns_name else ns_labels, pods))
    return Model(out, self.explicit_name_label)

  def with_pod_labels(self, pod_key, labels):
    """Upstream AddPodLabels: the given labels are added to (merged into) the pod's labels."""
    ns_name, pod_name = pod_key.split("/")
    out = []
    for ns, ns_labels, pods in self.namespaces:
      new_pods = []
      for pod in pods:
        if ns == ns_name and pod[0] == pod_name:
          new_pods.append((pod[0], dict(pod[1], **labels), pod[2]))
        else:
          new_pods.append(pod)
      out.append((ns, ns_labels, new_pods))
    return Model(out, self.explicit_name_label)

  def documents(self):
    docs = []
    for ns, labels, _ in self.namespaces:
      meta = {"name": ns}
      all_labels = {}
      if self.explicit_name_label:
        all_labels["kubernetes.io/metadata.name"] = ns
      all_labels.update(labels)
      if all_labels:
        meta["labels"] = all_labels
      docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    for n, (ns, _, pods) in enumerate(self.namespaces, 1):
      for p, pod in enumerate(pods, 1):
        name, labels, containers = pod[:3]
        extras = _pod_extras(pod)
        meta = {"name": name, "namespace": ns}
        if labels:
          meta["labels"] = dict(labels)
        spec_containers = []
        for cname, image, ports in containers:
          c = {"name": cname, "image": image}
          if ports:
            c["ports"] = [{"name": pn, "containerPort": port, "protocol": proto}
                          for pn, port, proto in ports]
          spec_containers.append(c)
        spec = {"nodeName": extras.get("node", "node-1")}
        if extras.get("host_network"):
          spec["hostNetwork"] = True
        spec["containers"] = spec_containers
        ipv4, ipv6 = _pod_ips(n, p, pod)
        docs.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {
                "phase": "Running",
                "podIP": ipv4,
                "podIPs": [{"ip": ipv4}, {"ip": ipv6}],
            },
        })
    return docs


def _pod_extras(pod):
  """A pod entry is (name, labels, containers) or (name, labels, containers, extras); extras may
  set "node" (spec.nodeName, default node-1), "host_network" (spec.hostNetwork) and "ips" (an
  (IPv4, IPv6) pair replacing the scheme's addresses, e.g. a host-network pod's node addresses)."""
  return pod[3] if len(pod) > 3 else {}


def _pod_ips(n, p, pod):
  return _pod_extras(pod).get("ips", (pod_ipv4(n, p), pod_ipv6(n, p)))


def node_document(name, labels, ipv4, ipv6):
  """A Node as the kubelet reports it: its labels and status.addresses (both families)."""
  return {
      "apiVersion": "v1",
      "kind": "Node",
      "metadata": {"name": name, "labels": dict(labels)},
      "status": {"addresses": [{"type": "InternalIP", "address": ipv4},
                               {"type": "InternalIP", "address": ipv6},
                               {"type": "Hostname", "address": name}]},
  }


def agnhost_containers(ports, protocols):
  """Upstream's model.go: one container per (port, protocol), named cont-<port>-<proto>, with one
  container port named serve-<port>-<proto>."""
  out = []
  for port in ports:
    for proto in protocols:
      lower = proto.lower()
      out.append(("cont-%d-%s" % (port, lower), AGNHOST,
                  [("serve-%d-%s" % (port, lower), port, proto)]))
  return out


def upstream_model(ports=(80, 81), protocols=("TCP", "UDP", "SCTP")):
  """Upstream's model: namespaces x, y, z (no labels but the name label the API server sets),
  pods a, b, c in each, labelled pod=<name>."""
  namespaces = []
  for ns in ("x", "y", "z"):
    pods = [(p, {"pod": p}, agnhost_containers(ports, protocols)) for p in ("a", "b", "c")]
    namespaces.append((ns, {}, pods))
  return Model(namespaces)


# ---------------------------------------------------------------------------------------------
# NetworkPolicy constructors, mirroring upstream policies.go. A "setter" is applied to the
# policy in order, exactly like upstream's SetFunc; GenNetworkPolicyWith... apply the caller's
# setters first, then the name and the pod selector.


def selector(match_labels=None, match_expressions=None):
  out = {}
  if match_labels:
    out["matchLabels"] = dict(match_labels)
  if match_expressions:
    out["matchExpressions"] = [
        {"key": k, "operator": op, "values": list(vals)} if vals is not None else
        {"key": k, "operator": op} for k, op, vals in match_expressions]
  return out


def peer(pod_selector=None, namespace_selector=None, ip_block=None):
  out = {}
  if pod_selector is not None:
    out["podSelector"] = pod_selector
  if namespace_selector is not None:
    out["namespaceSelector"] = namespace_selector
  if ip_block is not None:
    out["ipBlock"] = ip_block
  return out


def ip_block(cidr, except_=None):
  out = {"cidr": cidr}
  if except_:
    out["except"] = list(except_)
  return out


def port(port=None, protocol=None, end_port=None):
  out = {}
  if protocol is not None:
    out["protocol"] = protocol
  if port is not None:
    out["port"] = port
  if end_port is not None:
    out["endPort"] = end_port
  return out


def ingress_rule(from_=None, ports=None):
  out = {}
  if ports:
    out["ports"] = list(ports)
  if from_:
    out["from"] = list(from_)
  return out


def egress_rule(to=None, ports=None):
  out = {}
  if ports:
    out["ports"] = list(ports)
  if to:
    out["to"] = list(to)
  return out


def set_spec_ingress_rules(*rules):
  def apply(policy):
    spec = policy["spec"]
    if "ingress" not in spec:
      spec["ingress"] = []
      spec.setdefault("policyTypes", []).append("Ingress")
    spec["ingress"].extend(rules)
  return apply


def set_spec_egress_rules(*rules):
  def apply(policy):
    spec = policy["spec"]
    if "egress" not in spec:
      spec["egress"] = []
      spec.setdefault("policyTypes", []).append("Egress")
    spec["egress"].extend(rules)
  return apply


def _policy(name, pod_selector, setters):
  policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": {}}
  for s in setters:
    s(policy)
  policy["spec"]["podSelector"] = pod_selector
  return policy


def gen_network_policy_with_name_and_pod_selector(name, pod_selector, *setters):
  return _policy(name, pod_selector, setters)


def gen_network_policy_with_name_and_pod_match_label(name, labels, *setters):
  return _policy(name, selector(match_labels=labels), setters)


def in_namespace(policy, namespace):
  """CreatePolicy(ctx, k8s, policy, ns): the namespace is set when the policy is created."""
  meta = {"name": policy["metadata"]["name"], "namespace": namespace}
  spec = policy["spec"]
  ordered = {}
  for key in ("podSelector", "policyTypes", "ingress", "egress"):
    if key in spec:
      ordered[key] = spec[key]
  return {"apiVersion": policy["apiVersion"], "kind": policy["kind"], "metadata": meta,
          "spec": ordered}


# ---------------------------------------------------------------------------------------------
# Reachability, mirroring upstream reachability.go / truthtable.go.


class Peer(object):
  """Upstream's Peer: an empty namespace or pod matches everything."""

  def __init__(self, namespace="", pod=""):
    self.namespace = namespace
    self.pod = pod

  def matches(self, pod_key):
    ns, name = pod_key.split("/")
    return (self.namespace in ("", ns)) and (self.pod in ("", name))


class Reachability(object):
  """NewReachability(pods, defaultExpectation). Loopback (a pod to itself) is not checked by
  upstream (network_policy.go: ignoreLoopback = true; Reachability.Summary skips from == to), so
  the diagonal is written as '?' unless check_loopback is set."""

  def __init__(self, pods, default, check_loopback=False):
    self.pods = list(pods)
    self.values = {(f, t): default for f in self.pods for t in self.pods}
    self.check_loopback = check_loopback

  def expect(self, from_, to, connected):
    if (from_, to) not in self.values:
      raise KeyError((from_, to))
    self.values[(from_, to)] = connected

  def expect_all_ingress(self, pod, connected):  # TruthTable.SetAllTo
    for f in self.pods:
      self.expect(f, pod, connected)

  def expect_all_egress(self, pod, connected):  # TruthTable.SetAllFrom
    for t in self.pods:
      self.expect(pod, t, connected)

  def expect_peer(self, from_peer, to_peer, connected):
    for f in self.pods:
      if from_peer.matches(f):
        for t in self.pods:
          if to_peer.matches(t):
            self.expect(f, t, connected)

  def allow_loopback(self):
    for p in self.pods:
      self.values[(p, p)] = True

  def table(self):
    width = max(len(p) for p in self.pods)
    lines = [" " * width + "".join(" " + p.center(width) for p in self.pods)]
    for f in self.pods:
      cells = []
      for t in self.pods:
        if f == t and not self.check_loopback:
          sym = "?"
        else:
          sym = "." if self.values[(f, t)] else "X"
        cells.append(" " + sym.center(width))
      lines.append(f.ljust(width) + "".join(cells).rstrip())
    return Literal("\n".join(lines) + "\n")


TABLE_LEGEND = 'rows: source pod; columns: destination pod. "." allowed, "X" denied, "?" not checked'


def case(protocol, port_number, reachability):
  return {"protocol": protocol, "port": port_number,
          "#legend": TABLE_LEGEND, "table": reachability.table()}


def flow(from_, to, protocol, port_number, allowed):
  return Flow([("from", from_), ("to", to), ("protocol", protocol), ("port", port_number),
               ("allowed", allowed)])


def expectation(name, source, cases=None, flows=None, options=None):
  doc = {"apiVersion": "np.dev/v1alpha1", "kind": "ReachabilityExpectation",
         "metadata": {"name": name}, "source": source}
  if options:
    doc["options"] = dict(options)
  if cases:
    doc["cases"] = list(cases)
  if flows:
    doc["flows"] = list(flows)
  return doc
