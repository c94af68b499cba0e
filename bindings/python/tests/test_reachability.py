"""netpol.Reachability: building expected tables, comparing, printing, diffing; and the pytest
plugin's failure message."""

import textwrap

import pytest

import netpol
from netpol import pytest_plugin

PODS = ["x/a", "x/b", "y/a"]


def test_default_and_cells():
    r = netpol.Reachability(PODS)
    assert r.pods == tuple(PODS)
    assert all(v is True for _, _, v in r)
    d = netpol.Reachability(PODS, default=False)
    assert d["x/a", "y/a"] is False
    u = netpol.Reachability(PODS, default=None)
    assert u["x/a", "y/a"] is None
    r["x/a", "y/a"] = False
    assert r["x/a", "y/a"] is False and r["y/a", "x/a"] is True


def test_from_a_cluster(small):
    r = netpol.Reachability(small, default=False)
    assert r.pods == tuple(small.pods)
    assert not r.computed


def test_bad_construction():
    with pytest.raises(TypeError):
        netpol.Reachability("x/a")
    with pytest.raises(ValueError, match="twice"):
        netpol.Reachability(["x/a", "x/a"])
    with pytest.raises(TypeError):
        netpol.Reachability(PODS, default="yes")


def test_expect_allow_deny_ignore():
    r = netpol.Reachability(PODS)
    r.deny("x/a", "x/b").expect("x/b", "x/a", False).ignore("y/a", "y/a")
    assert r["x/a", "x/b"] is False and r["x/b", "x/a"] is False and r["y/a", "y/a"] is None
    r.allow("x/a", "x/b")
    assert r["x/a", "x/b"] is True


def test_whole_columns_and_rows():
    r = netpol.Reachability(PODS)
    r.deny_ingress_to("x/a")
    assert [r[s, "x/a"] for s in PODS] == [False, False, False]
    assert r["x/a", "x/b"] is True
    r.allow_ingress_to("x/a").deny_egress_from("y/a")
    assert [r["y/a", d] for d in PODS] == [False, False, False]
    assert r["x/b", "y/a"] is True
    r.allow_egress_from("y/a")
    assert all(v for _, _, v in r)
    r.expect_all_ingress("x/b", None).expect_all_egress("x/b", False)
    assert r["x/a", "x/b"] is None and r["x/b", "x/a"] is False


def test_expect_peer_patterns():
    r = netpol.Reachability(PODS)
    r.expect_peer("x/*", "y/*", False)
    assert r.denied_pairs() == [("x/a", "y/a"), ("x/b", "y/a")]
    r = netpol.Reachability(PODS)
    r.expect_peer("*/a", "*", False)
    assert r.denied_pairs() == [("x/a", d) for d in PODS] + [("y/a", d) for d in PODS]
    with pytest.raises(netpol.PodNotFoundError, match="matches no pod"):
        r.expect_peer("z/*", "*", True)


def test_loopback():
    r = netpol.Reachability(PODS, default=False).allow_loopback()
    assert r.allowed_pairs() == [(p, p) for p in PODS]
    r.ignore_loopback()
    assert [r[p, p] for p in PODS] == [None, None, None]


def test_unknown_pod_is_pod_not_found():
    r = netpol.Reachability(PODS)
    with pytest.raises(netpol.PodNotFoundError) as info:
        r.deny("x/a", "x/c")
    assert info.value.pod == "x/c"
    with pytest.raises(KeyError):
        r["q/q", "x/a"]


def test_equality_ignores_order_and_unchecked_cells():
    a = netpol.Reachability(PODS).deny("x/a", "y/a")
    b = netpol.Reachability(list(reversed(PODS))).deny("x/a", "y/a")
    assert a == b
    c = a.copy().ignore("x/a", "y/a")
    assert a == c and c == netpol.Reachability(PODS)  # "?" matches anything
    assert a != netpol.Reachability(PODS)
    assert a != netpol.Reachability(PODS[:2])
    assert (a == "x/a") is False
    with pytest.raises(TypeError):
        hash(a)


def test_from_table_and_str_round_trip():
    text = """
             x/a x/b y/a
        x/a   ?   X   .
        x/b   .   ?   X
        y/a   X   .   ?
    """
    r = netpol.Reachability.from_table(text, port=80, protocol="TCP")
    assert r["x/a", "x/b"] is False and r["x/b", "x/a"] is True and r["x/a", "x/a"] is None
    assert (r.port, r.protocol) == (80, "TCP")
    assert str(r).splitlines()[0] == "TCP/80"
    again = netpol.Reachability.from_table(str(r))
    assert (again.port, again.protocol) == (80, "TCP")
    assert list(again) == list(r)
    assert list(netpol.Reachability.from_table(r.to_table())) == list(r)


def test_from_table_accepts_upstream_corner_and_checks_shape():
    r = netpol.Reachability.from_table("- x/a x/b\nx/a . X\nx/b X .\n")
    assert r.denied_pairs() == [("x/a", "x/b"), ("x/b", "x/a")]
    with pytest.raises(ValueError, match="cells for"):
        netpol.Reachability.from_table("x/a x/b\nx/a . X .\nx/b X .\n")
    with pytest.raises(ValueError, match="not"):
        netpol.Reachability.from_table("x/a x/b\nx/a . O\nx/b X .\n")
    with pytest.raises(ValueError, match="same pods"):
        netpol.Reachability.from_table("x/a x/b\nx/a . X\nx/c X .\n")
    with pytest.raises(ValueError):
        netpol.Reachability.from_table("  \n")


def test_str_is_a_table_rows_from_columns_to():
    r = netpol.Reachability(["x/a", "y/b"], port=81, protocol="UDP").deny("x/a", "y/b")
    assert str(r) == textwrap.dedent("""\
        UDP/81
            x/a y/b
        x/a  .   X
        y/b  .   .""")
    assert repr(r) == "<netpol.Reachability UDP/81 2 pods: 3 allowed, 1 denied, 0 unchecked>"


def test_differences_and_diff():
    expected = netpol.Reachability(PODS).deny("x/a", "y/a").ignore("y/a", "y/a")
    actual = netpol.Reachability(PODS).deny("x/b", "y/a").deny("y/a", "y/a")
    assert expected.differences(actual) == [
        netpol.Difference("x/a", "y/a", expected=False, actual=True),
        netpol.Difference("x/b", "y/a", expected=True, actual=False),
    ]
    text = expected.diff(actual)
    lines = text.splitlines()
    assert lines[0] == "2 of 8 checked pod pairs differ:"
    assert lines[1] == "  x/a -> y/a: expected denied, actual allowed"
    assert lines[2] == "  x/b -> y/a: expected allowed, actual denied"
    assert "[.]" in text and "[X]" in text  # the differing cells, marked
    assert expected.diff(expected.copy()) == ""
    assert "only in the actual table: z/z" in expected.diff(netpol.Reachability(PODS + ["z/z"]))
    with pytest.raises(ValueError):
        expected.differences(netpol.Reachability(PODS[:1]))


def test_diff_names_port_and_protocol_of_the_matrix(small):
    expected = netpol.Reachability(small)  # everything allowed: wrong for db/*
    message = expected.diff(small.matrix(port=5432))
    assert message.startswith("5 of 9 checked pod pairs differ on TCP/5432:")
    assert "  web/frontend -> db/backup: expected allowed, actual denied" in message


def test_plugin_hook_names_actual_and_expected(small):
    expected = netpol.Reachability(small)
    actual = small.matrix(port=5432)
    for left, right in ((actual, expected), (expected, actual)):
        lines = pytest_plugin.pytest_assertrepr_compare(None, "==", left, right)
        assert lines[0] == "5 of 9 checked pod pairs differ on TCP/5432:"
        assert "expected allowed, actual denied" in lines[1]
        assert any(line.startswith("why ") for line in lines)
        assert not any("left taken as actual" in line for line in lines)
    both = pytest_plugin.pytest_assertrepr_compare(None, "==", expected, expected.copy().deny(
        "db/postgres", "db/postgres"))
    assert both[-1].endswith("left taken as actual)")
    assert pytest_plugin.pytest_assertrepr_compare(None, "==", actual, 1) is None
    assert pytest_plugin.pytest_assertrepr_compare(None, "<", actual, expected) is None


def test_failing_assert_shows_the_diff(pytester, testdata):
    """What a user sees when a policy is wrong: run a failing test in a pytest of its own."""
    pytester.makepyfile(test_policy=f"""
        import netpol

        def test_ingress_to_x_a():
            cluster = netpol.Cluster.from_files({str(testdata / "upstream" / "default-deny-ingress.yaml")!r})
            expected = netpol.Reachability(cluster, default=True)
            expected.deny_ingress_to("x/a")  # wrong: the policy isolates every pod of x
            assert cluster.matrix(port=80) == expected
    """)
    result = pytester.runpytest_subprocess("-p", "netpol.pytest_plugin", "-vv")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*assert 18 of 81 checked pod pairs differ on TCP/80:",
        "*x/a -> x/b: expected allowed, actual denied",
        "*why x/a -> x/b is denied:",
        "*DENIED: x/a -> x/b TCP/80 (IPv4)",
        "*ingress at x/b: DENIED (isolated by x/deny-ingress)",
        "*[[]X[]]*",
    ])
