"""Workloads as pods (np/workloads.h) through `import netpol`, on testdata/workloads/shop: an
application's manifests with no Pod objects. Expected verdicts were derived by hand from the
NetworkPolicy API (the comment on each names the deciding rule), as in
np/cli/workloads_test.sh."""

import warnings

import pytest

import netpol

from conftest import ENGINES, TESTDATA

SHOP = TESTDATA / "workloads" / "shop"
LIVE = TESTDATA / "workloads" / "live-api-pod.yaml"


@pytest.fixture(params=ENGINES)
def shop(request):
    return netpol.Cluster.from_files(SHOP, engine=request.param)


def test_every_workload_is_a_pod(shop):
    assert shop.pods == [
        "monitoring/legacy-scraper-0", "monitoring/node-exporter-0", "monitoring/probe-0",
        "shop/api-0", "shop/frontend-0", "shop/migrate-0", "shop/postgres-0", "shop/report-0",
    ]
    assert shop.synthesized_from("shop/postgres") == "StatefulSet shop/postgres"
    assert shop.synthesized_from("shop/report-0") == "CronJob shop/report"
    assert shop.skipped_kinds == {}  # the Service is read (a query target), not skipped
    assert shop.services() == ["shop/frontend"]


@pytest.mark.parametrize("source,destination,port,expected", [
    # api-from-frontend: app=frontend on "http" = 9000 at the api pods.
    ("shop/frontend", "shop/api", 9000, True),
    # "admin" (9001) only from namespace monitoring (api-metrics-from-monitoring).
    ("shop/frontend", "shop/api", 9001, False),
    ("monitoring/node-exporter", "shop/api", 9001, True),
    ("monitoring/legacy-scraper", "shop/api", 9001, True),
    # postgres-from-api-and-report: app In (api, report), TCP 5432.
    ("shop/api", "shop/postgres", 5432, True),
    ("shop/report", "shop/postgres", 5432, True),
    ("shop/frontend", "shop/postgres", 5432, False),
    # primary-from-migrate: controller labels job-name=migrate -> pod-name=postgres-0.
    ("shop/migrate", "shop/postgres-0", 5432, True),
    # frontend-from-cluster: ipBlock 10.244.0.0/16 (the default pod CIDR) on "http" = 8080.
    ("shop/api", "shop/frontend", 8080, True),
])
def test_verdicts(shop, source, destination, port, expected):
    assert shop.allowed(source, destination, port) is expected


def test_replicas_and_controller_labels():
    cluster = netpol.Cluster.from_files(SHOP, expand_replicas=True)
    assert cluster.pod_labels("shop/postgres-1")["statefulset.kubernetes.io/pod-name"] == "postgres-1"
    assert [p for p in cluster.pods if p.startswith("shop/frontend-")] == [
        "shop/frontend-0", "shop/frontend-1", "shop/frontend-2"]
    # primary-from-migrate selects pod-name=postgres-0 only.
    assert not cluster.allowed("shop/migrate", "shop/postgres-1", 5432)


def test_pod_cidr_outside_the_ipblock():
    cluster = netpol.Cluster.from_files(SHOP, pod_cidrs=["10.99.0.0/16"])
    assert cluster.pod_ips("shop/api")[0].startswith("10.99.")
    assert not cluster.allowed("shop/api", "shop/frontend", 8080)
    with pytest.raises(ValueError, match="more than one IPv4"):
        netpol.Cluster.from_files(SHOP, pod_cidrs=["10.1.0.0/16", "10.2.0.0/16"])


def test_live_pod_is_not_doubled():
    cluster = netpol.Cluster.from_files([SHOP, LIVE])
    assert "shop/api-0" not in cluster.pods
    assert "shop/api-5d8f7c9b4-x2x9q" in cluster.pods
    assert cluster.synthesized_from("shop/api-5d8f7c9b4-x2x9q") is None
    assert "10.244.0.1" not in cluster.pod_ips("shop/frontend-0")
    assert cluster.allowed("shop/api-5d8f7c9b4-x2x9q", "shop/frontend", 8080)


def test_policies_without_pods_warn():
    with pytest.warns(netpol.NoPodsWarning, match="6 NetworkPolicies but no pod"):
        netpol.Cluster.from_files(SHOP / "policies.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        netpol.Cluster.from_files(SHOP)  # pods synthesized: no warning
