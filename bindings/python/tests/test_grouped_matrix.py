"""Cluster.matrix(group_by=...): the grouped table of `netpol matrix --group-by`. Expected cells
come from the NetworkPolicy API applied by hand (each comment names the deciding policy): a cell
is "allowed" when every pod pair it covers is, "denied" when none is, "mixed" otherwise."""

import re

import pytest

import netpol

from conftest import ENGINES, TESTDATA

SCENARIO = TESTDATA / "upstream" / "allow-only-from-pod-in-different-namespace.yaml"
SHOP = TESTDATA / "workloads" / "shop"


@pytest.mark.parametrize("engine", ENGINES)
def test_by_namespace_upstream_scenario(engine):
    cluster = netpol.Cluster.from_files(SCENARIO, engine=engine)
    grouped = cluster.matrix(port=80, group_by="namespace")
    assert isinstance(grouped, netpol.GroupedReachability)
    assert grouped.groups == ["x", "y", "z"]
    assert grouped.pods("x") == ("x/a", "x/b", "x/c")
    # allow-ns-y-pod-a-via-namespace-pod-selector isolates x/a and admits only y/a: every
    # namespace has a pod that x/a denies and one that reaches x/b; nothing isolates y or z.
    assert grouped["y", "x"] == "mixed"
    assert grouped["z", "x"] == "mixed"
    assert grouped["x", "x"] == "mixed"
    for source in "xyz":
        for destination in "yz":
            assert grouped[source, destination] == "allowed", (source, destination)
    # The layout the CLI prints ("." allowed, "~" mixed), and its JSON shape.
    assert re.search(r"^y +~ +\. +\.$", str(grouped), re.M), str(grouped)
    doc = grouped.as_dict()
    assert doc["group_by"] == "namespace"
    assert doc["matrices"][0]["cells"][1] == ["mixed", "allowed", "allowed"]
    assert doc["groups"][1] == {"name": "y", "pods": ["y/a", "y/b", "y/c"]}


@pytest.mark.parametrize("engine", ENGINES)
def test_by_workload_shop_replicas(engine):
    cluster = netpol.Cluster.from_files(SHOP, expand_replicas=True, engine=engine)
    grouped = cluster.matrix(port=5432, group_by="workload")
    assert grouped.pods("shop/postgres") == ("shop/postgres-0", "shop/postgres-1")
    assert "shop/frontend" in grouped.groups and "shop/frontend-0" not in grouped.groups
    # postgres-from-api-and-report: app In (api, report) on TCP 5432, every postgres replica.
    assert grouped["shop/api", "shop/postgres"] == "allowed"
    assert grouped["shop/report", "shop/postgres"] == "allowed"
    # primary-from-migrate admits the migrate Job at postgres-0 only (pod-name label).
    assert grouped["shop/migrate", "shop/postgres"] == "mixed"
    # default-deny-ingress isolates every shop pod; nothing admits the frontend here.
    assert grouped["shop/frontend", "shop/postgres"] == "denied"
    assert grouped["shop/postgres", "shop/migrate"] == "denied"


def test_a_pod_of_no_workload_is_its_own_group():
    live = TESTDATA / "workloads" / "live-api-pod.yaml"
    grouped = netpol.Cluster.from_files([SHOP, live]).matrix(port=9000, group_by="workload")
    assert grouped.pods("shop/api-5d8f7c9b4-x2x9q") == ("shop/api-5d8f7c9b4-x2x9q",)
    # api-from-frontend: app=frontend on "http" (9000) at the api pods.
    assert grouped["shop/frontend", "shop/api-5d8f7c9b4-x2x9q"] == "allowed"


def test_bad_group_by_and_unknown_group():
    cluster = netpol.Cluster.from_files(SCENARIO)
    with pytest.raises(ValueError, match="group_by must be"):
        cluster.matrix(group_by="pods")
    with pytest.raises(KeyError, match="no group 'w'"):
        cluster.matrix(group_by="namespace")["w", "x"]
    assert isinstance(cluster.matrix(), netpol.Reachability)
