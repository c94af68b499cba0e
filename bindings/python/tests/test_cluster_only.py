"""What lives only in the cluster -- namespace_labels and cluster_pods -- on the DNS egress
example (testdata/workloads/dns-egress with the shop manifests). Expected verdicts were worked
out by hand from the policies, as in np/cli/workloads_test.sh:

* shop/egress-dns-only: every shop pod may send only to pods labelled k8s-app=kube-dns in
  the namespace whose kubernetes.io/metadata.name is kube-system, on 53/UDP and 53/TCP.
* monitoring/egress-dns-legacy-label: every monitoring pod may send only to pods of
  namespaces labelled name=kube-system, on 53/UDP.
* No policy selects kube-system's pods: their ingress is open.
"""

import pytest

import netpol

from conftest import ENGINES, TESTDATA

SHOP = TESTDATA / "workloads" / "shop"
EGRESS = TESTDATA / "workloads" / "dns-egress" / "egress.yaml"
COREDNS = "kube-system/coredns:k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP"
METRICS = "kube-system/metrics-server:k8s-app=metrics-server"


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def load(engine, **kwargs):
    kwargs.setdefault("cluster_pods", [COREDNS, METRICS])
    return netpol.Cluster.from_files([SHOP, EGRESS], engine=engine, **kwargs)


@pytest.mark.parametrize("source,destination,port,protocol,expected", [
    ("shop/api", "kube-system/coredns", 53, "UDP", True),
    ("shop/api", "kube-system/coredns", 53, "TCP", True),
    ("shop/api", "kube-system/coredns", 80, "TCP", False),        # not one of the rule's ports
    ("shop/api", "kube-system/metrics-server", 53, "UDP", False),  # podSelector k8s-app=kube-dns
    ("shop/api", "shop/postgres", 5432, "TCP", False),            # egress is isolated now
    # No name=kube-system label without namespace_labels.
    ("monitoring/probe", "kube-system/coredns", 53, "UDP", False),
])
def test_dns_egress(engine, source, destination, port, protocol, expected):
    cluster = load(engine)
    assert cluster.allowed(source, destination, port=port, protocol=protocol) is expected


@pytest.mark.parametrize("source,destination,port,protocol,expected", [
    ("monitoring/probe", "kube-system/coredns", 53, "UDP", True),
    # namespaceSelector alone: every pod of the namespace.
    ("monitoring/probe", "kube-system/metrics-server", 53, "UDP", True),
    ("monitoring/probe", "kube-system/coredns", 53, "TCP", False),  # UDP only
])
def test_namespace_labels_give_the_legacy_label(engine, source, destination, port, protocol,
                                                 expected):
    cluster = load(engine, namespace_labels={"kube-system": {"name": "kube-system"}})
    assert cluster.allowed(source, destination, port=port, protocol=protocol) is expected


def test_cluster_pods_are_marked_and_addressed():
    cluster = load("engine")
    assert "kube-system/coredns-0" in cluster.pods
    assert cluster.synthesized_from("kube-system/coredns") == "cluster_pods kube-system/coredns"
    assert cluster.pod_labels("kube-system/coredns") == {"k8s-app": "kube-dns"}
    # The first pod in (namespace, name) order gets the first host of each default CIDR.
    assert cluster.pod_ips("kube-system/coredns") == ["10.244.0.1", "fd00:10:244::1"]
    assert "kube-system" in cluster.namespaces


def test_namespace_labels_from_yaml_and_objects():
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "platform"}}}]}]},
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "web"},
           "spec": {"containers": [{"name": "c"}]},
           "status": {"phase": "Running", "podIP": "10.0.0.9"}}
    labels = {"kube-system": {"team": "platform"}}
    for cluster in (
        netpol.Cluster.from_objects([policy, pod], namespace_labels=labels,
                                    cluster_pods="kube-system/dns"),
        netpol.Cluster.from_yaml(
            "\n---\n".join(__import__("json").dumps(o) for o in (policy, pod)),
            namespace_labels=labels, cluster_pods=["kube-system/dns"]),
    ):
        assert cluster.allowed("web/a", "kube-system/dns", port=53, protocol="UDP")
    # Without the label the namespace has only kubernetes.io/metadata.name.
    cluster = netpol.Cluster.from_objects([policy, pod], cluster_pods="kube-system/dns")
    assert not cluster.allowed("web/a", "kube-system/dns", port=53, protocol="UDP")


def test_labels_for_a_defined_namespace_are_an_error_naming_both():
    with pytest.raises(netpol.ValidationError) as info:
        load("engine", namespace_labels={"monitoring": {"team": "obs"}})
    message = str(info.value)
    assert "namespace_labels: Namespace monitoring: labels given here, but the input defines " \
           "this namespace too (" in message
    assert "namespace.yaml:8)" in message


def test_bad_labels_and_pods_are_errors_naming_the_argument():
    with pytest.raises(netpol.ValidationError, match="namespace_labels: Namespace kube-system: "
                                                     "metadata.labels"):
        load("engine", namespace_labels={"kube-system": {"bad key!": "x"}})
    with pytest.raises(ValueError, match='cluster_pods: "coredns" is not NAMESPACE/NAME'):
        load("engine", cluster_pods=["coredns"])
    with pytest.raises(netpol.ValidationError,
                       match=r"cluster_pods: Pod kube-system/dns-0: spec.containers\[0\].ports\[0\]"):
        load("engine", cluster_pods=["kube-system/dns::53/udp"])
    with pytest.raises(TypeError, match="namespace_labels takes a dict"):
        load("engine", namespace_labels=["kube-system"])
    with pytest.raises(TypeError, match=r"namespace_labels\['kube-system'\] must be a dict"):
        load("engine", namespace_labels={"kube-system": "name=kube-system"})


# Pods the input holds but that take no part in pod networking are named with the reason, not
# reported as missing (issue 9, "nothing is left out silently").
def test_a_left_out_pod_is_named_with_why(small):
    with pytest.raises(netpol.PodNotFoundError) as info:
        small.allowed("web/debug", "db/postgres", port=5432)
    assert info.value.pod == "web/debug"
    assert str(info.value).startswith(
        "pod web/debug is hostNetwork: NetworkPolicy does not apply to it")
    finished = netpol.Cluster.from_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: done, namespace: web}\n"
        "spec: {containers: [{name: c}]}\nstatus: {phase: Succeeded}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: web}\n"
        "spec: {containers: [{name: c}]}\nstatus: {phase: Running, podIP: 10.0.0.1}\n"
        "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: web}\n"
        "spec: {template: {spec: {hostNetwork: true, containers: [{name: c}]}}}\n")
    with pytest.raises(netpol.PodNotFoundError, match="pod web/done is in phase Succeeded"):
        finished.explain("web/a", "web/done")
    # A workload's pod, named by the workload.
    with pytest.raises(netpol.PodNotFoundError, match="pod web/agent-0 is hostNetwork"):
        finished.pod_labels("web/agent")
    with pytest.raises(netpol.PodNotFoundError, match='no pod "web/nope" in the cluster'):
        finished.pod_labels("web/nope")


# A listing filter that matches nothing is an error, not an empty (vacuously passing) list.
def test_connection_filters_that_match_nothing_are_errors():
    shop = netpol.Cluster.from_files(SHOP)
    with pytest.raises(ValueError, match='from "nope/\\*" matches no pod of the input'):
        shop.connections(source="nope/*")
    with pytest.raises(ValueError, match="it names a workload: its pods are shop/api-\\*"):
        shop.connections(destination="shop/api")
    with pytest.raises(ValueError, match='port "nosuchname" is the name of no container port'):
        shop.connections(ports=["nosuchname"])
    with pytest.raises(ValueError, match='to "shop/nope-\\*" matches no pod'):
        shop.diff(shop, destination="shop/nope-*")
    # A filter that matches, with nothing allowed, is an empty list: frontend-0 takes only
    # "http" (8080), so nothing reaches it on 9999.
    assert shop.connections(destination="shop/frontend-*", ports=["9999"], external=False) == []
