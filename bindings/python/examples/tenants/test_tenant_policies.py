"""Policy tests for a cluster with administrators above the teams: AdminNetworkPolicies
(evaluated before any NetworkPolicy: Allow and Deny are final, Pass hands the flow to the
namespace's NetworkPolicies) and a BaselineAdminNetworkPolicy (evaluated after them, for what
no NetworkPolicy decided). Run: python3 -m pytest bindings/python/examples/tenants.

Every expectation below is worked out by hand from the API's rules
(policy.networking.k8s.io/v1alpha1, see README.md) and the manifests, not from netpol's output.
"""

import os
from pathlib import Path

import pytest

import netpol

MANIFESTS = Path(os.environ.get("TENANT_MANIFESTS", Path(__file__).parent / "manifests"))

CONTROLLER = "ingress-nginx/controller-0"
PROMETHEUS = "monitoring/prometheus-0"
COREDNS = "kube-system/coredns-0"
A_WEB, A_DB = "team-a/web-0", "team-a/db-0"
B_WEB, B_DB = "team-b/web-0", "team-b/db-0"
TENANT_PODS = [A_WEB, A_DB, B_WEB, B_DB]

PAYMENT_PROVIDER = "203.0.113.10"
INTERNET_CLIENT = "198.51.100.77"


@pytest.fixture(scope="module")
def cluster():
    return netpol.Cluster.from_files(MANIFESTS)


# Port by port, the only connections that involve a tenant pod and are allowed, and the
# rule that allows each (every other tenant flow is denied; the shared services among
# themselves are decided by nobody, so allowed).
DESIGN = {
    # ANP tenant-a/tenant-b rule "ingress-controller" (Allow, final): any tenant pod.
    ("TCP", 8080): [(CONTROLLER, pod) for pod in TENANT_PODS],
    # ANP tenant-a "same-tenant" Passes team-a's pods on; NetworkPolicy db-from-web (ingress)
    # and web-egress (egress) admit web -> db. team-b wrote no policy: the baseline denies.
    ("TCP", 5432): [(A_WEB, A_DB)],
    # ANP allow-monitoring (priority 5) before the tenants' Deny: the named port "metrics".
    ("TCP", 9100): [(PROMETHEUS, pod) for pod in TENANT_PODS],
    # ANP dns (priority 1): every pod's egress to CoreDNS; CoreDNS has no ingress policy.
    ("UDP", 53): [(pod, COREDNS) for pod in TENANT_PODS],
    # Nothing else: not the controller on the database port, not team-a's web on 443.
    ("TCP", 443): [],
}


def tenant_expectation(cluster, allowed):
    expected = netpol.Reachability(cluster, default=True)
    expected.expect_peer("team-*/*", "*", False)  # a tenant's egress: the baseline denies
    expected.expect_peer("*", "team-*/*", False)  # a tenant's ingress: "everyone-else" denies
    for source, destination in allowed:
        expected.allow(source, destination)
    return expected


def test_manifests_are_valid(cluster):
    assert cluster.warnings == []
    assert set(TENANT_PODS + [CONTROLLER, PROMETHEUS, COREDNS]) == set(cluster.pods)


@pytest.mark.parametrize("protocol,port", list(DESIGN), ids=[f"{p}/{n}" for p, n in DESIGN])
def test_design(cluster, protocol, port):
    expected = tenant_expectation(cluster, DESIGN[protocol, port])
    assert cluster.matrix(port=port, protocol=protocol) == expected


def test_other_tenants_are_denied_even_where_a_team_policy_would_allow(cluster):
    # team-a's db-from-web admits app=web pods of team-a only, but tenant-a's "everyone-else"
    # Deny would stop team-b's web before any NetworkPolicy in any case.
    assert not cluster.allowed(B_WEB, A_DB, port=5432)
    why = str(cluster.explain(B_WEB, A_DB, port=5432))
    assert "AdminNetworkPolicy tenant-a" in why and "everyone-else" in why


def test_within_a_tenant_the_team_decides(cluster):
    # Pass: team-a's own policies decide; team-b has none, so the baseline decides (Deny).
    assert cluster.allowed(A_WEB, A_DB, port=5432)
    assert not cluster.allowed(A_WEB, A_DB, port=6379)  # web-egress names 5432 only
    assert not cluster.allowed(B_WEB, B_DB, port=5432)
    why = str(cluster.explain(B_WEB, B_DB, port=5432))
    assert "BaselineAdminNetworkPolicy default" in why


def test_the_internet_is_denied_above_the_teams_policies(cluster):
    # team-a's web-egress allows 0.0.0.0/0 on 443, but no-internet's Deny (Admin tier) is
    # final: a NetworkPolicy never sees the flow.
    assert not cluster.allowed(A_WEB, PAYMENT_PROVIDER, port=443)
    assert "AdminNetworkPolicy no-internet" in str(cluster.explain(A_WEB, PAYMENT_PROVIDER, port=443))
    # The shared services are no tenant: nobody restricts them.
    assert cluster.allowed(CONTROLLER, PAYMENT_PROVIDER, port=443)


def test_namespace_peers_never_match_an_address_outside_the_cluster(cluster):
    # v1alpha1 ingress peers are namespaces and pods only: neither tenant-a's "everyone-else"
    # nor the baseline's "default-deny" matches an internet client, and no NetworkPolicy
    # isolates team-a's web for ingress, so the client is allowed (default allow). Keeping the
    # internet out of a pod's ingress takes a NetworkPolicy (or the ingress controller).
    assert cluster.allowed(INTERNET_CLIENT, A_WEB, port=8080)
    # team-a's db is isolated by db-from-web: only team-a's web gets in.
    assert not cluster.allowed(INTERNET_CLIENT, A_DB, port=5432)
