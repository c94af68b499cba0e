"""Policy tests for the shop: who may talk to whom, written down once, checked on every change
of the manifests. Run: python3 -m pytest bindings/python/examples/shop (see README.md).

The expectations here are the design ("only the API reaches Postgres"), written by hand; netpol
evaluates the manifests exactly as Kubernetes defines NetworkPolicy.
"""

import os
from pathlib import Path

import pytest

import netpol

MANIFESTS = Path(os.environ.get("SHOP_MANIFESTS", Path(__file__).parent / "manifests"))

CONTROLLER = "ingress-nginx/controller-0"
PROMETHEUS = "monitoring/prometheus-0"
COREDNS = "kube-system/coredns-0"
FRONTENDS = ["shop/frontend-0", "shop/frontend-1"]
API = "shop/api-0"
POSTGRES = "shop/postgres-0"
REDIS = "shop/redis-0"
SHOP = FRONTENDS + [API, POSTGRES, REDIS]

PAYMENT_PROVIDER = "203.0.113.10"  # somewhere on the internet
INTERNET_CLIENT = "198.51.100.77"


@pytest.fixture(scope="module")
def cluster():
    return netpol.Cluster.from_files(MANIFESTS)


def shop_expectation(cluster, allowed):
    """Nothing reaches into or out of the shop except the `allowed` (source, destination)
    pairs; pods outside the shop have no policies, so everything else there is allowed."""
    expected = netpol.Reachability(cluster, default=True)
    for pod in SHOP:
        expected.deny_egress_from(pod)
        expected.deny_ingress_to(pod)
    for source, destination in allowed:
        expected.allow(source, destination)
    return expected


# Port by port, every pod-to-pod connection the shop's design allows.
DESIGN = {
    ("TCP", 8080): [(CONTROLLER, f) for f in FRONTENDS],                 # web traffic
    ("TCP", 8000): [(f, API) for f in FRONTENDS],                        # frontend -> API
    ("TCP", 5432): [(API, POSTGRES)],                                    # API -> database
    ("TCP", 6379): [(API, REDIS)],                                       # API -> cache
    ("TCP", 9100): [(PROMETHEUS, p) for p in FRONTENDS + [API]],         # metrics
    ("TCP", 9187): [(PROMETHEUS, POSTGRES)],                             # postgres-exporter
    ("UDP", 53): [(p, COREDNS) for p in SHOP],                           # DNS
    ("TCP", 53): [(p, COREDNS) for p in SHOP],
    ("TCP", 443): [],                                                    # (internet only)
    ("TCP", 22): [],
}


def test_manifests_are_valid(cluster):
    assert cluster.warnings == []
    assert set(SHOP) <= set(cluster.pods)
    assert "shop/default-deny-all" in cluster.policies


@pytest.mark.parametrize("protocol,port", list(DESIGN), ids=[f"{p}/{n}" for p, n in DESIGN])
def test_design(cluster, protocol, port):
    expected = shop_expectation(cluster, DESIGN[protocol, port])
    assert cluster.matrix(port=port, protocol=protocol) == expected


def test_only_the_api_reaches_the_database(cluster):
    for pod in cluster.pods:
        assert cluster.allowed(pod, POSTGRES, port=5432) == (pod == API), pod


def test_web_traffic_enters_through_the_ingress_controller_only(cluster):
    assert cluster.allowed(CONTROLLER, "shop/frontend-0", port=8080)
    assert not cluster.allowed(INTERNET_CLIENT, "shop/frontend-0", port=8080)
    assert not cluster.allowed(PROMETHEUS, "shop/frontend-0", port=8080)
    assert not cluster.allowed(CONTROLLER, API, port=8000)


def test_the_api_calls_the_payment_provider_over_https_only(cluster):
    assert cluster.allowed(API, PAYMENT_PROVIDER, port=443)
    assert not cluster.allowed(API, PAYMENT_PROVIDER, port=80)
    assert not cluster.allowed("shop/frontend-0", PAYMENT_PROVIDER, port=443)
    # The ipBlock leaves out private ranges: no detour to other internal addresses.
    assert not cluster.allowed(API, "10.20.0.5", port=443)
    assert not cluster.allowed(API, "192.168.1.1", port=443)


def test_metrics_are_scraped_on_each_pods_own_metrics_port(cluster):
    # "metrics" is 9100 on the frontend and the API, 9187 on postgres' exporter.
    assert cluster.allowed(PROMETHEUS, POSTGRES, port=9187)
    assert not cluster.allowed(PROMETHEUS, POSTGRES, port=9100)
    assert not cluster.allowed(PROMETHEUS, POSTGRES, port=5432)
    assert not cluster.allowed(PROMETHEUS, REDIS, port=6379)


def test_dns_is_the_only_way_into_kube_system(cluster):
    for pod in SHOP:
        assert cluster.allowed(pod, COREDNS, port=53, protocol="UDP")
        assert not cluster.allowed(pod, COREDNS, port=9153)


def test_why_the_frontend_cannot_reach_the_database(cluster):
    why = cluster.explain("shop/frontend-0", POSTGRES, port=5432)
    assert not why.allowed
    assert not why.egress.allowed and not why.ingress.allowed
    assert "shop/frontend" in why.egress.isolating_policies
    # Every policy that selects postgres-0 for ingress isolates it; none admits the frontend.
    assert why.ingress.isolating_policies == [
        "shop/allow-metrics-scrape", "shop/default-deny-all", "shop/postgres"]
    assert why.ingress.allowing_rules == []
    print(why)  # shown with pytest -s: the policies and rules behind the verdict
