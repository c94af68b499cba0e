"""One meaning per address: IPv4-mapped IPv6 text is the IPv4 address, and an address two live
pods hold quarantines both (README, "Shared addresses"). Expected verdicts follow from those
two rules and the NetworkPolicy API, not from np's output."""

import netpol

DENY_ALL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""


def pod(name, ip, labels="{app: a}"):
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {labels}}}
spec: {{containers: [{{name: c}}]}}
status: {{phase: Running, podIP: "{ip}", podIPs: [{{ip: "{ip}"}}]}}
"""


def test_ipv4_mapped_pod_ip_is_isolated_on_its_ipv4_address():
    cluster = netpol.Cluster.from_yaml(DENY_ALL + pod("a", "::ffff:10.0.0.9"))
    assert not cluster.allowed("203.0.113.1", "x/a", port=80)
    assert not cluster.allowed("203.0.113.1", "10.0.0.9", port=80)
    assert cluster.explain("203.0.113.1", "x/a", port=80).family == "IPv4"


def test_ipv4_mapped_except_excludes_the_ipv4_range():
    policy = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-lan, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 192.168.0.0/16, except: ["::ffff:192.168.66.0/120"]}
"""
    cluster = netpol.Cluster.from_yaml(policy + pod("a", "10.0.0.1"))
    assert cluster.allowed("192.168.65.7", "x/a", port=80)
    assert not cluster.allowed("192.168.66.7", "x/a", port=80)


def test_a_shared_address_quarantines_both_pods():
    cluster = netpol.Cluster.from_yaml(
        pod("a", "10.0.0.5") + pod("b", "10.0.0.5") + pod("c", "10.0.0.6")
    )
    # Nothing isolates these pods, yet a and b are denied both ways: np cannot tell them apart.
    assert not cluster.allowed("x/c", "x/a", port=80)
    assert not cluster.allowed("x/b", "x/c", port=80)
    assert not cluster.allowed("x/c", "10.0.0.5", port=80)
    why = cluster.explain("x/c", "x/b", port=80)
    assert why.ingress.shared_addresses == ["10.0.0.5"]
    assert "also held by x/a" in str(why)
    assert cluster.allowed("x/c", "x/c", port=80)
