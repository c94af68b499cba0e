"""Policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy) from
Python: the engine evaluates them (no fallback, no warning); the analyses that read its tables
directly (connections, diff) list them exactly. Every flow of upstream's
conformance suite (testdata/tiers, read here with PyYAML) is checked in both versions, by
the engine and by the reference."""

import os
from pathlib import Path

import pytest
import yaml

import netpol

TESTDATA = Path(os.environ.get("NP_TESTDATA", Path(__file__).resolve().parents[3] / "testdata"))
FILES = sorted((TESTDATA / "tiers" / "v1alpha1").glob("*.yaml")) + sorted(
    (TESTDATA / "tiers" / "v1alpha2").glob("*.yaml"))


def test_all_tier_files_are_found():
    assert len(FILES) == 63 + 70


def flows_of(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ReachabilityExpectation":
            options = doc.get("options") or {}
            for flow in doc.get("flows") or []:
                yield options, flow


@pytest.mark.parametrize("engine", ["engine", "reference"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_upstream_expectations(path, engine):
    clusters = {}
    checked = 0
    for options, flow in flows_of(path):
        allow_self = bool(options.get("alwaysAllowSelf", False))
        if allow_self not in clusters:
            clusters[allow_self] = netpol.Cluster.from_files([str(path)], allow_self=allow_self,
                                                             engine=engine)
            assert clusters[allow_self].engine == engine
        got = clusters[allow_self].allowed(flow["from"], flow["to"], port=flow["port"],
                                           protocol=flow["protocol"])
        assert got == flow["allowed"], (path.name, engine, flow)
        checked += 1
    assert checked > 0


def test_tier_input_uses_the_engine_without_a_warning(recwarn):
    path = TESTDATA / "tiers" / "v1alpha2" / "admin-egress-node-peers.yaml"
    cluster = netpol.Cluster.from_files([str(path)])
    assert not [w for w in recwarn if "policy tiers" in str(w.message)]
    assert cluster.engine == "engine"
    # Upstream (CNPAdminTierEgressNodePeers): TCP 36364 to node-2 is denied by the Admin tier.
    explanation = str(cluster.explain("network-policy-conformance-gryffindor/harry-potter-1",
                                      "172.18.0.3", port=36364))
    assert "DENIED by Admin tier, ClusterNetworkPolicy node-and-cidr-as-peers-example" in explanation
    # Rule 0 accepts TCP 36363 to the nodes; UDP 34345 passes to NetworkPolicy, which
    # isolates nothing here; rule 2 denies the rest. Both nodes run linux: one range.
    harry = "network-policy-conformance-gryffindor/harry-potter-1"
    listing = cluster.connections(source=harry, destination="172.18.0.3", explain=True)
    assert [(e["to"], e["ports"]) for e in listing] == [
        ("172.18.0.2-172.18.0.3", {"TCP": [(36363, 36363)], "UDP": [(34345, 34345)]})]
    assert listing[0]["why"] == {"egress": [
        'Admin tier, ClusterNetworkPolicy node-and-cidr-as-peers-example (priority 75) '
        'spec.egress[0] "allow-egress-to-36363-on-nodes": Allow', "not isolated"], "ingress": []}


def test_tier_policy_edit_diff_names_the_deciding_rules(tmp_path):
    path = TESTDATA / "tiers" / "v1alpha2" / "admin-egress-node-peers.yaml"
    moved = tmp_path / "moved.yaml"
    moved.write_text(path.read_text().replace("number: 36363", "number: 36365"))
    before = netpol.Cluster.from_files([str(path)])
    after = netpol.Cluster.from_files([str(moved)])
    harry = "network-policy-conformance-gryffindor/harry-potter-1"
    d = before.diff(after, source=harry, destination="172.18.0.3", explain=True)
    policy = "Admin tier, ClusterNetworkPolicy node-and-cidr-as-peers-example (priority 75)"
    assert [e["ports"] for e in d["added"]] == [{"TCP": [(36365, 36365)]}]
    assert [e["ports"] for e in d["removed"]] == [{"TCP": [(36363, 36363)]}]
    # 36365 was denied by rule 2 and is accepted by the moved rule 0; 36363 the reverse.
    deny = f'{policy} spec.egress[2] "deny-egress-to-slytherin-and-nodes-and-internet": Deny'
    assert d["added"][0]["why"]["egress"] == [f'{policy} spec.egress[0] "allow-egress-to-36363-on-nodes": Allow']
    assert d["added"][0]["why_not"]["egress"] == [deny]
    assert d["removed"][0]["why_not"]["egress"] == [deny]


def test_node_relabel_diff(tmp_path):
    # Upstream's AdminNetworkPolicyEgressNodePeers with node-2 relabeled off
    # kubernetes.io/os=linux: rules 0 (Allow TCP 36363) and 1 (Pass UDP 5353) no longer select
    # it, rule 2's 0.0.0.0/0 still denies it; nothing changes toward node-1.
    path = TESTDATA / "tiers" / "v1alpha1" / "anp-egress-node-peers.yaml"
    text = path.read_text()
    head, node_2 = text.split("  name: node-2\n", 1)
    node_2, tail = node_2.split("---", 1)
    relabeled = tmp_path / "relabeled.yaml"
    relabeled.write_text(head + "  name: node-2\n" +
                         node_2.replace("kubernetes.io/os: linux", "kubernetes.io/os: windows") +
                         "---" + tail)
    before = netpol.Cluster.from_files([str(path)])
    after = netpol.Cluster.from_files([str(relabeled)])
    harry = "network-policy-conformance-gryffindor/harry-potter-1"
    d = before.diff(after, source=harry, destination="172.18.0.0/16")
    assert d["added"] == []
    assert [(e["to"], e["ports"]) for e in d["removed"]] == [
        ("172.18.0.3-172.18.0.3", {"TCP": [(36363, 36363)], "UDP": [(5353, 5353)]})]
    assert after.diff(before, source=harry, destination="172.18.0.0/16")["added"] == d["removed"]
