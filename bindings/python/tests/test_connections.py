"""Cluster.connections() and Cluster.diff(): what can reach what on which ports, and what a
change opens or closes. Expected entries come from upstream's truth table for the scenario
(only y/a reaches x/a) and from the NetworkPolicy API."""

import pytest

import netpol

SCENARIO = "upstream/allow-only-from-pod-in-different-namespace.yaml"


@pytest.fixture()
def scenario(testdata):
    return netpol.Cluster.from_files(testdata / SCENARIO)


def test_what_can_reach_x_a(scenario):
    assert scenario.connections(destination="x/a") == [
        {"from": "y/a", "to": "x/a",
         "ports": {"TCP": [(1, 65535)], "UDP": [(1, 65535)], "SCTP": [(1, 65535)]}}
    ]


def test_filters_by_port_protocol_and_name(scenario):
    assert scenario.connections(destination="x/a", ports=["80-81"], protocols=["TCP"]) == [
        {"from": "y/a", "to": "x/a", "ports": {"TCP": [(80, 81)]}}
    ]
    # serve-81-udp is the name x/a gives UDP 81 (upstream's model).
    assert scenario.connections(source="y/*", destination="x/a", ports=["serve-81-udp"]) == [
        {"from": "y/a", "to": "x/a", "ports": {"UDP": [(81, 81)]}}
    ]
    with pytest.raises(ValueError):
        scenario.connections(ports=[0])


def test_every_listed_port_is_allowed_and_the_rest_denied(scenario):
    for entry in scenario.connections(external=False):
        for protocol, ranges in entry["ports"].items():
            for first, last in ranges:
                assert scenario.allowed(entry["from"], entry["to"], first, protocol)
                assert scenario.allowed(entry["from"], entry["to"], last, protocol)
    listed = {(e["from"], e["to"]) for e in scenario.connections(external=False)}
    for source in scenario.pods:
        for destination in scenario.pods:
            if source != destination and (source, destination) not in listed:
                assert not scenario.allowed(source, destination, 80, "TCP")


def test_diff(testdata, scenario):
    assert scenario.diff(scenario) == {"added": [], "removed": []}
    before = netpol.Cluster.from_files(
        testdata / "upstream/stacked-policies-overlapping-pod-selectors-before.yaml")
    after = netpol.Cluster.from_files(
        testdata / "upstream/stacked-policies-overlapping-pod-selectors-after.yaml")
    forward = before.diff(after, destination="x/a", external=False)
    backward = after.diff(before, destination="x/a", external=False)
    assert {"from": "y/b", "to": "x/a", "ports": {"TCP": [(80, 80)]}} in forward["added"]
    assert forward["added"] == backward["removed"]
    assert forward["removed"] == backward["added"]


def test_explain_names_the_deciding_rules(testdata, scenario):
    # x/a's one policy isolates it and its only rule admits y/a; y/a has no egress policy.
    rule = "x/allow-ns-y-pod-a-via-namespace-pod-selector spec.ingress[0]"
    [entry] = scenario.connections(destination="x/a", explain=True)
    assert entry["why"] == {"egress": ["not isolated"], "ingress": [rule]}
    assert "why" not in scenario.connections(destination="x/a")[0]
    before = netpol.Cluster.from_files(
        testdata / "upstream/stacked-policies-overlapping-pod-selectors-before.yaml")
    after = netpol.Cluster.from_files(
        testdata / "upstream/stacked-policies-overlapping-pod-selectors-after.yaml")
    [added] = before.diff(after, source="y/b", destination="x/a", external=False,
                          explain=True)["added"]
    assert added["why"]["ingress"] == ["x/allow-client-a-via-ns-selector-80 spec.ingress[0]"]
    assert added["why_not"] == {
        "egress": [], "ingress": ["isolated by x/allow-client-a-via-ns-selector; no rule admits"]}
