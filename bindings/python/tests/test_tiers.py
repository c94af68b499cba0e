"""Policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy) from
Python: the engine does not evaluate them yet, so a Cluster with tier policies is evaluated by
the reference, with a warning, and the engine-only analyses raise. Every flow of upstream's
conformance suite (testdata/tiers, read here with PyYAML) is checked in both versions."""

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


@pytest.mark.filterwarnings("ignore:the input has policy tiers")
@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_upstream_expectations(path):
    clusters = {}
    checked = 0
    for options, flow in flows_of(path):
        allow_self = bool(options.get("alwaysAllowSelf", False))
        if allow_self not in clusters:
            clusters[allow_self] = netpol.Cluster.from_files([str(path)], allow_self=allow_self)
        got = clusters[allow_self].allowed(flow["from"], flow["to"], port=flow["port"],
                                           protocol=flow["protocol"])
        assert got == flow["allowed"], (path.name, flow)
        checked += 1
    assert checked > 0


def test_tier_input_uses_the_reference_with_a_warning():
    path = TESTDATA / "tiers" / "v1alpha2" / "admin-egress-node-peers.yaml"
    with pytest.warns(UserWarning, match="policy tiers"):
        cluster = netpol.Cluster.from_files([str(path)])
    assert cluster.engine == "reference"
    # Upstream (CNPAdminTierEgressNodePeers): TCP 36364 to node-2 is denied by the Admin tier.
    explanation = str(cluster.explain("network-policy-conformance-gryffindor/harry-potter-1",
                                      "172.18.0.3", port=36364))
    assert "DENIED by Admin tier, ClusterNetworkPolicy node-and-cidr-as-peers-example" in explanation
    with pytest.raises(ValueError, match="does not evaluate the policy tiers"):
        cluster.connections()


def test_reference_requested_explicitly_gives_no_warning(recwarn):
    path = TESTDATA / "tiers" / "v1alpha2" / "admin-egress-node-peers.yaml"
    netpol.Cluster.from_files([str(path)], engine="reference")
    assert not [w for w in recwarn if "policy tiers" in str(w.message)]
