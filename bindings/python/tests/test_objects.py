"""Cluster.from_objects: dicts as manifests, as the Kubernetes Python client's to_dict() and
sanitize_for_serialization() return them, and the client's model objects."""

import datetime

import pytest

import netpol

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "shop", "labels": {"team": "shop"}}}
POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "api-0", "namespace": "shop", "labels": {"app": "api"}},
    "spec": {"containers": [{"name": "api", "image": "api:1",
                             "ports": [{"name": "http", "containerPort": 8000}]}]},
    "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}]},
}
CLIENT = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]},
}
POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "api", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "api"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
             "ports": [{"port": "http"}]},
            {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
             "ports": [{"port": 9000, "endPort": 9100, "protocol": "TCP"}]},
        ],
    },
}


def check(cluster):
    """The verdicts the objects above imply (by reading them, not by running netpol)."""
    assert cluster.pods == ["shop/api-0", "shop/web-0"]
    assert cluster.allowed("shop/web-0", "shop/api-0", 8000)       # named port http
    assert not cluster.allowed("shop/web-0", "shop/api-0", 8001)
    assert cluster.allowed("192.0.2.1", "shop/api-0", 9050)        # ipBlock, endPort range
    assert not cluster.allowed("192.0.2.200", "shop/api-0", 9050)  # except
    assert not cluster.allowed("192.0.2.1", "shop/api-0", 9101)


def test_camel_case_manifests():
    check(netpol.Cluster.from_objects([NAMESPACE, POD, CLIENT, POLICY]))


def test_a_single_dict_and_a_generator():
    assert netpol.Cluster.from_objects(POD).pods == ["shop/api-0"]
    assert netpol.Cluster.from_objects(o for o in [POD, CLIENT]).pods == ["shop/api-0",
                                                                           "shop/web-0"]


def snake_policy():
    """POLICY as V1NetworkPolicy(...).to_dict() returns it: attribute names, None for unset."""
    selector = {"match_labels": {"app": "api"}, "match_expressions": None}
    return {
        "api_version": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "api", "namespace": "shop", "labels": None, "annotations": None,
                     "creation_timestamp": datetime.datetime(2024, 5, 1, 12, 0,
                                                             tzinfo=datetime.timezone.utc),
                     "managed_fields": [{"api_version": "networking.k8s.io/v1",
                                         "fields_type": "FieldsV1", "manager": "kubectl"}],
                     "resource_version": "123", "uid": "u-1"},
        "spec": {
            "pod_selector": selector,
            "policy_types": ["Ingress"],
            "egress": None,
            "ingress": [
                {"_from": [{"pod_selector": {"match_labels": {"app": "web"},
                                             "match_expressions": None},
                            "namespace_selector": None, "ip_block": None}],
                 "ports": [{"port": "http", "end_port": None, "protocol": None}]},
                {"_from": [{"ip_block": {"cidr": "192.0.2.0/24", "_except": ["192.0.2.128/25"]},
                            "pod_selector": None, "namespace_selector": None}],
                 "ports": [{"port": 9000, "end_port": 9100, "protocol": "TCP"}]},
            ],
        },
    }


def snake_pod(pod):
    """A pod as V1Pod.to_dict() returns it (status.pod_i_ps, container_port, ...)."""
    container = pod["spec"]["containers"][0]
    return {
        "api_version": "v1", "kind": "Pod",
        "metadata": {"name": pod["metadata"]["name"], "namespace": "shop",
                     "labels": pod["metadata"]["labels"], "deletion_timestamp": None},
        "spec": {"containers": [{
            "name": container["name"], "image": container["image"],
            "ports": [{"name": p["name"], "container_port": p["containerPort"],
                       "host_port": None, "protocol": "TCP"} for p in container.get("ports", [])],
            "security_context": None}],
            "node_name": "node-1", "host_network": None},
        "status": {"phase": "Running", "pod_ip": pod["status"]["podIP"],
                   "pod_i_ps": [{"ip": pod["status"]["podIP"]}], "host_ip": "192.168.1.1",
                   "start_time": datetime.datetime(2024, 5, 1)},
    }


def test_snake_case_to_dict_form():
    check(netpol.Cluster.from_objects([snake_pod(POD), snake_pod(CLIENT), snake_policy()]))


def test_except_underscore_spelling():
    policy = snake_policy()
    block = policy["spec"]["ingress"][1]["_from"][0]["ip_block"]
    block["except_"] = block.pop("_except")
    check(netpol.Cluster.from_objects([snake_pod(POD), snake_pod(CLIENT), policy]))


def test_label_keys_are_never_rewritten():
    pod = snake_pod(CLIENT)
    pod["metadata"]["labels"] = {"app": "web", "my_label": "x", "team_name": "y"}
    cluster = netpol.Cluster.from_objects([pod])
    assert cluster.pod_labels("shop/web-0") == {"app": "web", "my_label": "x", "team_name": "y"}
    policy = snake_policy()
    policy["spec"]["ingress"][0]["_from"][0]["pod_selector"]["match_labels"] = {"my_label": "x"}
    cluster = netpol.Cluster.from_objects([snake_pod(POD), pod, policy])
    assert cluster.allowed("shop/web-0", "shop/api-0", 8000)


def test_list_items_without_kind_get_it_from_the_list():
    # V1PodList.to_dict(): items carry kind=None and api_version=None.
    pods = {"api_version": "v1", "kind": "PodList", "metadata": {"resource_version": "1"},
            "items": [dict(snake_pod(POD), kind=None, api_version=None),
                      dict(snake_pod(CLIENT), kind=None, api_version=None)]}
    check(netpol.Cluster.from_objects([pods, snake_policy()]))


def test_kind_is_inferred_from_fields():
    pod = dict(snake_pod(POD), kind=None, api_version=None)
    policy = dict(snake_policy(), kind=None, api_version=None)
    namespace = {"metadata": {"name": "shop", "labels": {"team": "shop"}},
                 "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
    cluster = netpol.Cluster.from_objects([namespace, pod, snake_pod(CLIENT), policy])
    check(cluster)
    assert cluster.namespaces == ["shop"]


def test_kind_that_cannot_be_told():
    with pytest.raises(ValueError, match=r"objects\[0\].*no 'kind'"):
        netpol.Cluster.from_objects([{"metadata": {"name": "x", "namespace": "y"},
                                      "spec": {"replicas": 3}}])


class V1Pod:  # stands in for kubernetes.client.V1Pod: to_dict(), kind unset
    def __init__(self, data):
        self._data = data

    def to_dict(self):
        return dict(self._data, kind=None, api_version=None)


class V1NetworkPolicy(V1Pod):
    pass


def test_client_model_objects():
    check(netpol.Cluster.from_objects(
        [V1Pod(snake_pod(POD)), V1Pod(snake_pod(CLIENT)), V1NetworkPolicy(snake_policy())]))


def test_other_kinds_are_skipped():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}}
    cluster = netpol.Cluster.from_objects([POD, config])
    assert cluster.skipped_kinds == {"ConfigMap": 1}


def test_services_are_read_and_validated():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    cluster = netpol.Cluster.from_objects([POD, service])
    assert cluster.skipped_kinds == {}
    assert cluster.services() == ["default/s"]
    # Without ports (and not headless) the API server refuses it: spec.ports is required.
    with pytest.raises(netpol.ValidationError) as e:
        netpol.Cluster.from_objects([POD, {**service, "spec": {"selector": {"app": "x"}}}])
    assert [(d.kind, d.object, d.field) for d in e.value.errors] == \
        [("Service", "default/s", "spec.ports")]


def test_not_dicts():
    with pytest.raises(TypeError):
        netpol.Cluster.from_objects(["apiVersion: v1"])
    with pytest.raises(TypeError, match="from_yaml"):
        netpol.Cluster.from_objects("apiVersion: v1\nkind: Pod\n")
    with pytest.raises(TypeError):
        netpol.Cluster.from_objects(42)
