"""pytest plugin: readable failures for ``assert actual == expected`` on Reachability tables.

Installed with pip, the package registers it (entry point ``pytest11``); otherwise enable it in
a conftest.py (``pytest_plugins = ["netpol.pytest_plugin"]``) or with
``pytest -p netpol.pytest_plugin``.

On failure pytest then prints which pod pairs differ (expected vs actual) and both tables with
the differing cells marked, instead of two reprs. The side computed by ``Cluster.matrix()`` is
taken as the actual one; when both or neither are computed, the left side is (pytest's own
convention: ``assert actual == expected``).
"""

from __future__ import annotations

from typing import List, Optional

from ._reachability import Reachability


def pytest_assertrepr_compare(config, op: str, left, right) -> Optional[List[str]]:
    if op not in ("==", "!=") or not (
        isinstance(left, Reachability) and isinstance(right, Reachability)
    ):
        return None
    if op == "!=":
        return [f"{left!r} != {right!r}", "the tables agree on every cell both check"]
    if left.computed == right.computed or left.computed:
        actual, expected = left, right
    else:
        actual, expected = right, left
    lines = expected.diff(actual).splitlines()
    if left.computed == right.computed:
        lines.append("(neither or both tables come from Cluster.matrix(): left taken as actual)")
    return lines
