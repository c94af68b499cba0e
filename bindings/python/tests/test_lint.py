"""Cluster.lint() on the shop app (testdata/workloads/shop) with and without the planted
mistakes of testdata/lint/shop-typos. The expected findings are the ones
testdata/lint/README.md derives from the manifests (as np/cli/lint_test.sh checks for the
command line), not lint's own output."""

import pytest

import netpol

from conftest import TESTDATA

SHOP = TESTDATA / "workloads" / "shop"
TYPOS = TESTDATA / "lint" / "shop-typos"
HALF = TESTDATA / "lint" / "report-from-half.yaml"


def rows(findings):
    return sorted((f.code, f.severity, f.kind, f.object, f.field) for f in findings)


def test_the_shop_app_gives_only_two_infos():
    # default-deny-ingress isolates the five shop pods for ingress only (NP107); the ipBlock
    # 10.244.0.0/16 holds every pod's address but is the whole IPv4 pod CIDR (NP108, no NP109).
    findings = netpol.Cluster.from_files(SHOP).lint()
    assert rows(findings) == [
        ("NP107", "info", "Namespace", "shop", ""),
        ("NP108", "info", "NetworkPolicy", "shop/frontend-from-cluster",
         "spec.ingress[0].from[0].ipBlock"),
    ]
    assert all(f.severity == "info" for f in findings)


def test_each_planted_mistake_is_found():
    findings = netpol.Cluster.from_files([SHOP, TYPOS]).lint()
    assert rows(findings) == [
        ("NP101", "warning", "NetworkPolicy", "shop/frontend-to-api", "spec.podSelector"),
        ("NP102", "warning", "NetworkPolicy", "shop/api-egress",
         "spec.egress[0].to[0].podSelector"),
        ("NP103", "warning", "NetworkPolicy", "shop/api-egress",
         "spec.egress[1].to[0].namespaceSelector.matchLabels[kubernetes.io/metadata.name]"),
        ("NP104", "warning", "NetworkPolicy", "shop/api-metrics", "spec.ingress[0].ports[0].port"),
        ("NP105", "warning", "NetworkPolicy", "shop/api-metrics", ""),
        ("NP107", "info", "Namespace", "shop", ""),
        ("NP108", "info", "NetworkPolicy", "shop/frontend-from-cluster",
         "spec.ingress[0].from[0].ipBlock"),
    ]
    typo = next(f for f in findings if f.code == "NP101")
    # The podSelector with "frontned" is on line 12 of the typos file.
    assert (typo.file, typo.line) == (str(TYPOS / "policies.yaml"), 12)
    assert typo.name == "selector-matches-nothing"
    assert str(typo).startswith(
        f"{TYPOS / 'policies.yaml'}:12: NP101 warning NetworkPolicy shop/frontend-to-api: "
        "spec.podSelector: ")
    assert "kube-system" in next(f for f in findings if f.code == "NP103").message


def test_ipblock_scope_external_drops_ipblock_findings():
    findings = netpol.Cluster.from_files(SHOP, ipblock_scope="external").lint()
    assert [f.code for f in findings] == ["NP107"]


def test_an_ipblock_that_splits_the_pod_cidr_is_a_warning():
    # 10.244.0.0/17 is half of the default pod CIDR 10.244.0.0/16.
    np109 = [f for f in netpol.Cluster.from_files([SHOP, HALF]).lint() if f.code == "NP109"]
    assert [(f.object, f.field, f.severity) for f in np109] == [
        ("shop/report-from-half", "spec.ingress[0].from[0].ipBlock", "warning")]
    # With pod_cidrs=10.244.0.0/17, the block holds the whole pod CIDR: nothing depends on
    # which address np picked.
    assert not [f for f in netpol.Cluster.from_files([SHOP, HALF], pod_cidrs=["10.244.0.0/17"]).lint()
                if f.code == "NP109"]


def test_finding_is_a_named_tuple():
    f = netpol.Finding("NP102", "peer-matches-nothing", "warning", "NetworkPolicy", "a/b",
                       "spec.podSelector", None, None, "matches no pod")
    assert f.code == "NP102" and f[0] == "NP102"
    assert str(f) == "NP102 warning NetworkPolicy a/b: spec.podSelector: matches no pod"
    with pytest.raises(AttributeError):
        f.code = "x"


def test_explain_notes_an_address_np_invented():
    # report-from-half admits 10.244.0.0/17, half of the IPv4 pod CIDR 10.244.0.0/16 that
    # shop/api-0's address was drawn from: whether api reaches report depends on that address
    # (as `netpol explain` says; np/cli/lint_test.sh).
    cluster = netpol.Cluster.from_files([SHOP, HALF])
    text = str(cluster.explain("shop/api", "shop/report", port=80))
    assert "note: the verdict depends on the address np assigned to shop/api-0 (10.244." in text
    assert "shop/report-from-half spec.ingress[0].from[0].ipBlock" in text
    # No ipBlock splits the pod CIDR on this flow: no note.
    assert "note: the verdict" not in str(cluster.explain("shop/frontend", "shop/api", port=9000))
