"""Reachability: a truth table over pods, rows = source, columns = destination.

Built two ways: by ``Cluster.matrix()`` (what the policies decide) and by hand, as the
expectation a test compares it with -- the way Kubernetes' e2e suite writes its expectations
(test/e2e/network/netpol/reachability.go: ``Expect``, ``ExpectAllIngress``,
``ExpectAllEgress``, ``ExpectPeer``)::

    expected = netpol.Reachability(cluster, default=True)
    expected.deny_ingress_to("x/a")         # nothing reaches x/a ...
    expected.allow("x/b", "x/a")            # ... except x/b
    assert cluster.matrix(port=80) == expected

Admin-tier policies need nothing else: patterns close whole namespaces, single cells open what
an AdminNetworkPolicy Allows or Passes on to a team's NetworkPolicy (examples/tenants)::

    expected = netpol.Reachability(cluster, default=True)
    expected.expect_peer("*", "team-*/*", False)             # the tenants' admin Deny
    expected.allow("ingress-nginx/controller-0", "team-a/web-0")   # an admin Allow, final

A cell is True (allowed, "."), False (denied, "X") or None (not checked, "?"). Two tables are
equal when they have the same pods and agree on every cell that both check: a "?" matches
anything, so an expectation can leave cells open (upstream leaves pod-to-itself open).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from ._errors import PodNotFoundError

__all__ = ["Reachability", "Difference", "GroupedReachability"]

_UNCHECKED, _ALLOWED, _DENIED = 0, 1, 2
_SYMBOL = {_UNCHECKED: "?", _ALLOWED: ".", _DENIED: "X"}
_FROM_SYMBOL = {"?": _UNCHECKED, ".": _ALLOWED, "X": _DENIED}
_WORD = {_ALLOWED: "allowed", _DENIED: "denied", _UNCHECKED: "unchecked"}

_MAX_LISTED = 30
_TITLE = re.compile(r"^(TCP|UDP|SCTP|\?)/(\d+|\?)$")


def _code(value: Optional[bool]) -> int:
    if value is None:
        return _UNCHECKED
    if value is True or value is False:
        return _ALLOWED if value else _DENIED
    raise TypeError(f"a cell is True (allowed), False (denied) or None (unchecked), not {value!r}")


class Difference(NamedTuple):
    """One pair on which two tables disagree."""

    source: str
    destination: str
    expected: bool
    actual: bool

    def __str__(self) -> str:
        return (
            f"{self.source} -> {self.destination}: expected {_WORD[_code(self.expected)]}, "
            f"actual {_WORD[_code(self.actual)]}"
        )


class Reachability:
    """An expected or computed truth table of pod-to-pod connectivity."""

    __slots__ = ("_pods", "_index", "_cells", "port", "protocol", "computed", "_explain")
    __hash__ = None  # mutable

    def __init__(
        self,
        pods: Union["Cluster", Iterable[str]],  # noqa: F821 (netpol.Cluster)
        default: Optional[bool] = True,
        *,
        port: Optional[int] = None,
        protocol: Optional[str] = None,
    ):
        """A table over ``pods`` (a Cluster: its pods; or "namespace/name" strings), every
        cell set to ``default`` (True allowed, False denied, None unchecked)."""
        names = getattr(pods, "pods", pods)
        if isinstance(names, str):
            raise TypeError("pods must be a Cluster or a list of 'namespace/name' strings")
        self._pods: Tuple[str, ...] = tuple(names)
        self._index = {}
        for i, pod in enumerate(self._pods):
            if not isinstance(pod, str):
                raise TypeError(f"pod names are strings, not {pod!r}")
            if pod in self._index:
                raise ValueError(f"pod {pod!r} listed twice")
            self._index[pod] = i
        n = len(self._pods)
        self._cells = bytearray([_code(default)]) * (n * n)
        self.port = port
        self.protocol = protocol
        # True for a table computed by Cluster.matrix(): the pytest plugin then knows which
        # side of `==` is the actual one.
        self.computed = False
        # For a computed table: (source, destination) -> Explanation, for diff()'s "why".
        self._explain = None

    # --- construction helpers ------------------------------------------------------------

    @classmethod
    def _from_cells(cls, pods: Sequence[str], cells: bytes, port: int, protocol: str,
                    explain=None):
        r = cls(pods, None, port=port, protocol=protocol)
        r._cells = bytearray(_ALLOWED if c else _DENIED for c in cells)
        r.computed = True
        r._explain = explain
        return r

    @classmethod
    def from_table(
        cls, text: str, *, port: Optional[int] = None, protocol: Optional[str] = None
    ) -> "Reachability":
        """Reads a table as ``str()`` prints it (and as upstream's TruthTable.PrettyPrint and
        the testdata ReachabilityExpectation files write it): a header line of destination
        pods, then one line per source pod with ".", "X" or "?" per column. Blank lines and a
        "-" corner of the header are ignored; a first line naming protocol/port is skipped."""
        lines = [line.split() for line in text.splitlines() if line.strip()]
        if lines and len(lines[0]) == 1:
            title = _TITLE.match(lines[0][0])
            if title:  # "TCP/80", the first line str() prints
                if protocol is None and title.group(1) != "?":
                    protocol = title.group(1)
                if port is None and title.group(2) != "?":
                    port = int(title.group(2))
                lines = lines[1:]
        if not lines:
            raise ValueError("an empty table")
        header = lines[0]
        if header and header[0] == "-":
            header = header[1:]
        rows = lines[1:]
        row_names = [row[0] for row in rows]
        if set(row_names) != set(header) or len(row_names) != len(header):
            raise ValueError(
                "a table needs the same pods as rows and as columns "
                f"(columns: {' '.join(header)}; rows: {' '.join(row_names)})"
            )
        r = cls(header, None, port=port, protocol=protocol)
        for number, row in enumerate(rows, start=2):
            if len(row) != len(header) + 1:
                raise ValueError(
                    f"table line {number} ({row[0]}): {len(row) - 1} cells for "
                    f"{len(header)} columns"
                )
            for column, symbol in zip(header, row[1:]):
                if symbol not in _FROM_SYMBOL:
                    raise ValueError(
                        f"table line {number} ({row[0]} -> {column}): {symbol!r} is not "
                        '".", "X" or "?"'
                    )
                r._cells[r._at(row[0], column)] = _FROM_SYMBOL[symbol]
        return r

    def copy(self) -> "Reachability":
        r = Reachability(self._pods, None, port=self.port, protocol=self.protocol)
        r._cells = bytearray(self._cells)
        r.computed = self.computed
        r._explain = self._explain
        return r

    # --- access --------------------------------------------------------------------------

    @property
    def pods(self) -> Tuple[str, ...]:
        """Row and column names, in order."""
        return self._pods

    def _pod(self, pod: str) -> int:
        try:
            return self._index[pod]
        except KeyError:
            raise PodNotFoundError(
                f"no pod {pod!r} in this table (pods: {', '.join(self._pods)})", pod
            ) from None

    def _at(self, source: str, destination: str) -> int:
        return self._pod(source) * len(self._pods) + self._pod(destination)

    def __getitem__(self, pair: Tuple[str, str]) -> Optional[bool]:
        code = self._cells[self._at(*pair)]
        return None if code == _UNCHECKED else code == _ALLOWED

    def __setitem__(self, pair: Tuple[str, str], allowed: Optional[bool]) -> None:
        self._cells[self._at(*pair)] = _code(allowed)

    def __iter__(self) -> Iterator[Tuple[str, str, Optional[bool]]]:
        """(source, destination, allowed-or-None) for every cell, row by row."""
        for i, source in enumerate(self._pods):
            for j, destination in enumerate(self._pods):
                code = self._cells[i * len(self._pods) + j]
                yield source, destination, (None if code == _UNCHECKED else code == _ALLOWED)

    def allowed_pairs(self) -> List[Tuple[str, str]]:
        """Every (source, destination) marked allowed."""
        return [(s, d) for s, d, v in self if v is True]

    def denied_pairs(self) -> List[Tuple[str, str]]:
        """Every (source, destination) marked denied."""
        return [(s, d) for s, d, v in self if v is False]

    # --- expectations (names as in upstream's reachability.go) ---------------------------

    def expect(self, source: str, destination: str, allowed: Optional[bool]) -> "Reachability":
        """One cell (upstream: Expect)."""
        self[source, destination] = allowed
        return self

    def allow(self, source: str, destination: str) -> "Reachability":
        return self.expect(source, destination, True)

    def deny(self, source: str, destination: str) -> "Reachability":
        return self.expect(source, destination, False)

    def ignore(self, source: str, destination: str) -> "Reachability":
        """Leave one cell unchecked ("?")."""
        return self.expect(source, destination, None)

    def expect_all_ingress(self, pod: str, allowed: Optional[bool]) -> "Reachability":
        """The whole column of `pod`: every source to it (upstream: ExpectAllIngress)."""
        j, n, code = self._pod(pod), len(self._pods), _code(allowed)
        for i in range(n):
            self._cells[i * n + j] = code
        return self

    def allow_ingress_to(self, pod: str) -> "Reachability":
        return self.expect_all_ingress(pod, True)

    def deny_ingress_to(self, pod: str) -> "Reachability":
        return self.expect_all_ingress(pod, False)

    def expect_all_egress(self, pod: str, allowed: Optional[bool]) -> "Reachability":
        """The whole row of `pod`: it to every destination (upstream: ExpectAllEgress)."""
        i, n, code = self._pod(pod), len(self._pods), _code(allowed)
        for j in range(n):
            self._cells[i * n + j] = code
        return self

    def allow_egress_from(self, pod: str) -> "Reachability":
        return self.expect_all_egress(pod, True)

    def deny_egress_from(self, pod: str) -> "Reachability":
        return self.expect_all_egress(pod, False)

    def expect_peer(
        self, source: str, destination: str, allowed: Optional[bool]
    ) -> "Reachability":
        """Every cell whose source matches the pattern `source` and whose destination matches
        `destination` (upstream: ExpectPeer). Patterns are shell-style over "namespace/name":
        "x/*" every pod of x, "*/a" every pod named a, "*" every pod. A pattern matching no
        pod is an error (it is almost always a typo)."""
        sources = self._match(source)
        destinations = self._match(destination)
        n, code = len(self._pods), _code(allowed)
        for i in sources:
            for j in destinations:
                self._cells[i * n + j] = code
        return self

    def _match(self, pattern: str) -> List[int]:
        if pattern in ("*", "*/*"):
            return list(range(len(self._pods)))
        found = [i for i, pod in enumerate(self._pods) if fnmatch.fnmatchcase(pod, pattern)]
        if not found:
            raise PodNotFoundError(
                f"pattern {pattern!r} matches no pod of this table "
                f"(pods: {', '.join(self._pods)})",
                pattern,
            )
        return found

    def allow_loopback(self) -> "Reachability":
        """Every pod to itself allowed (upstream: AllowLoopback)."""
        return self._diagonal(_ALLOWED)

    def ignore_loopback(self) -> "Reachability":
        """Every pod to itself unchecked, as upstream's e2e suite compares (ignoreLoopback)."""
        return self._diagonal(_UNCHECKED)

    def _diagonal(self, code: int) -> "Reachability":
        n = len(self._pods)
        for i in range(n):
            self._cells[i * n + i] = code
        return self

    # --- comparison ----------------------------------------------------------------------

    def _aligned(self, other: "Reachability") -> Optional[List[int]]:
        """other's index of each of our pods, or None when the pod sets differ."""
        if set(self._pods) != set(other._pods):
            return None
        return [other._index[p] for p in self._pods]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reachability):
            return NotImplemented
        order = self._aligned(other)
        if order is None:
            return False
        if order == list(range(len(order))) and _UNCHECKED not in self._cells and (
            _UNCHECKED not in other._cells
        ):
            return self._cells == other._cells
        return not self._differences(other, order)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def _differences(self, other: "Reachability", order: List[int]) -> List[Difference]:
        n = len(self._pods)
        out = []
        for i in range(n):
            oi = order[i] * n
            for j in range(n):
                a = self._cells[i * n + j]
                b = other._cells[oi + order[j]]
                if a != b and a != _UNCHECKED and b != _UNCHECKED:
                    out.append(Difference(self._pods[i], self._pods[j], a == _ALLOWED, b == _ALLOWED))
        return out

    def differences(self, actual: "Reachability") -> List[Difference]:
        """The pairs where this table (the expectation) and `actual` disagree, both checked.
        Raises ValueError when the two tables are not over the same pods."""
        order = self._aligned(actual)
        if order is None:
            raise ValueError(self._pod_set_message(actual))
        return self._differences(actual, order)

    def _pod_set_message(self, actual: "Reachability") -> str:
        missing = [p for p in self._pods if p not in actual._index]
        extra = [p for p in actual._pods if p not in self._index]
        parts = ["the tables are over different pods:"]
        if missing:
            parts.append(f"only in the expected table: {', '.join(missing)}")
        if extra:
            parts.append(f"only in the actual table: {', '.join(extra)}")
        return " ".join(parts)

    def diff(self, actual: "Reachability") -> str:
        """A readable account of where `actual` differs from this expectation: the differing
        pairs, then the actual table with those cells marked. Empty when they agree."""
        order = self._aligned(actual)
        if order is None:
            return self._pod_set_message(actual)
        differences = self._differences(actual, order)
        if not differences:
            return ""
        checked = sum(
            1
            for i in range(len(self._pods))
            for j in range(len(self._pods))
            if self._cells[i * len(self._pods) + j] != _UNCHECKED
            and actual._cells[order[i] * len(self._pods) + order[j]] != _UNCHECKED
        )
        what = _title(actual.port or self.port, actual.protocol or self.protocol)
        lines = [
            f"{len(differences)} of {checked} checked pod pairs differ"
            + (f" on {what}" if what else "")
            + ":"
        ]
        for d in differences[:_MAX_LISTED]:
            lines.append(f"  {d}")
        if len(differences) > _MAX_LISTED:
            lines.append(f"  ... and {len(differences) - _MAX_LISTED} more")
        explain = actual._explain or self._explain
        if explain is not None:
            first = differences[0]
            lines.append(f"why {first.source} -> {first.destination} is "
                         f"{_WORD[_code(first.actual)]}:")
            lines.extend("  " + line for line in str(explain(first.source,
                                                             first.destination)).splitlines())
        lines.append("")
        lines.append(
            "actual (rows: from, columns: to; \".\" allowed, \"X\" denied, \"?\" unchecked; "
            "[ ] marks a cell that differs from the expectation):"
        )
        marked = {(d.source, d.destination) for d in differences}
        aligned = actual._reordered(self._pods)
        lines.extend("  " + line for line in aligned._render(marked).splitlines())
        lines.append("")
        lines.append("expected:")
        lines.extend("  " + line for line in self._render(marked).splitlines())
        return "\n".join(lines)

    def _reordered(self, pods: Sequence[str]) -> "Reachability":
        r = Reachability(pods, None, port=self.port, protocol=self.protocol)
        for i, s in enumerate(pods):
            for j, d in enumerate(pods):
                r._cells[i * len(pods) + j] = self._cells[self._at(s, d)]
        r.computed = self.computed
        r._explain = self._explain
        return r

    # --- text ----------------------------------------------------------------------------

    def _render(self, marked=frozenset()) -> str:
        n = len(self._pods)
        label = max([len(p) for p in self._pods] + [1])
        widths = [max(len(p), 3) for p in self._pods]
        lines = [" " * label + "".join(f" {p:>{w}}" for p, w in zip(self._pods, widths))]
        for i, source in enumerate(self._pods):
            cells = []
            for j, destination in enumerate(self._pods):
                symbol = _SYMBOL[self._cells[i * n + j]]
                cell = f"[{symbol}]" if (source, destination) in marked else f" {symbol} "
                cells.append(f" {cell:^{widths[j]}}")
            lines.append((f"{source:<{label}}" + "".join(cells)).rstrip())
        return "\n".join(lines)

    def to_table(self) -> str:
        """The table alone, as from_table() reads it."""
        return self._render()

    def __str__(self) -> str:
        title = _title(self.port, self.protocol)
        return (title + "\n" if title else "") + self._render()

    def __repr__(self) -> str:
        counts = {code: self._cells.count(code) for code in (_ALLOWED, _DENIED, _UNCHECKED)}
        title = _title(self.port, self.protocol)
        return (
            f"<netpol.Reachability{' ' + title if title else ''} {len(self._pods)} pods: "
            f"{counts[_ALLOWED]} allowed, {counts[_DENIED]} denied, "
            f"{counts[_UNCHECKED]} unchecked>"
        )


def _title(port: Optional[int], protocol: Optional[str]) -> str:
    if port is None and protocol is None:
        return ""
    return f"{protocol or '?'}/{port if port is not None else '?'}"


_GROUP_SYMBOL = {"allowed": ".", "denied": "X", "mixed": "~"}


class GroupedReachability:
    """A computed truth table with pods merged into groups -- ``Cluster.matrix(group_by=...)``,
    the table ``netpol matrix --group-by`` prints. A cell covers every pod pair between its two
    groups (a pod's flow to itself included, as in the ungrouped table): ``"allowed"`` when all
    of them are allowed, ``"denied"`` when none is, ``"mixed"`` otherwise::

        grouped = cluster.matrix(port=5432, group_by="workload")
        grouped["shop/api", "shop/postgres"]   # "allowed"
        grouped.pods("shop/postgres")          # ("shop/postgres-0", "shop/postgres-1")
    """

    __slots__ = ("group_by", "port", "protocol", "_names", "_index", "_members", "_cells")
    __hash__ = None

    def __init__(self, table: Reachability, group_of, group_by: str):
        """Folds a computed ``table`` with ``group_of(pod) -> group name``; groups are sorted
        by name, each group's pods kept in the table's order."""
        members = {}
        for pod in table._pods:
            members.setdefault(group_of(pod), []).append(pod)
        self.group_by = group_by
        self.port = table.port
        self.protocol = table.protocol
        self._names: Tuple[str, ...] = tuple(sorted(members))
        self._index = {name: i for i, name in enumerate(self._names)}
        self._members = {name: tuple(pods) for name, pods in members.items()}
        g, n = len(self._names), len(table._pods)
        group_of_pod = [self._index[group_of(pod)] for pod in table._pods]
        allowed = [0] * (g * g)
        total = [0] * (g * g)
        for i in range(n):
            row = group_of_pod[i] * g
            base = i * n
            for j in range(n):
                cell = row + group_of_pod[j]
                total[cell] += 1
                allowed[cell] += table._cells[base + j] == _ALLOWED
        self._cells = tuple(
            "allowed" if allowed[c] == total[c] else "denied" if allowed[c] == 0 else "mixed"
            for c in range(g * g))

    @property
    def groups(self) -> List[str]:
        """The group names, sorted: namespaces, or workloads as "namespace/name" (a pod made
        from no workload is a group of its own, named by the pod)."""
        return list(self._names)

    def pods(self, group: str) -> Tuple[str, ...]:
        """The pods of a group."""
        if group not in self._members:
            raise KeyError(f"no group {group!r} (groups: {', '.join(self._names)})")
        return self._members[group]

    def __getitem__(self, pair: Tuple[str, str]) -> str:
        """``grouped[source_group, destination_group]``: "allowed", "denied" or "mixed"."""
        source, destination = pair
        g = len(self._names)
        for name in (source, destination):
            if name not in self._index:
                raise KeyError(f"no group {name!r} (groups: {', '.join(self._names)})")
        return self._cells[self._index[source] * g + self._index[destination]]

    def __iter__(self) -> Iterator[Tuple[str, str, str]]:
        """(source group, destination group, cell) for every cell, row by row."""
        g = len(self._names)
        for r, source in enumerate(self._names):
            for c, destination in enumerate(self._names):
                yield source, destination, self._cells[r * g + c]

    def as_dict(self) -> dict:
        """The shape ``netpol matrix --group-by ... -o json`` prints (one matrix)."""
        g = len(self._names)
        return {
            "group_by": self.group_by,
            "groups": [{"name": name, "pods": list(self._members[name])} for name in self._names],
            "matrices": [{
                "protocol": self.protocol, "port": self.port,
                "cells": [list(self._cells[r * g:(r + 1) * g]) for r in range(g)],
            }],
        }

    def __str__(self) -> str:
        """The text table ``netpol matrix --group-by`` prints: "." allowed, "X" denied,
        "~" mixed."""
        title = f"{self.protocol}/{self.port}"
        width = max([3, len(title)] + [len(name) for name in self._names])
        g = len(self._names)
        lines = [" ".join([title.ljust(width)] + [name.rjust(width) for name in self._names])]
        for r, name in enumerate(self._names):
            cells = [_GROUP_SYMBOL[self._cells[r * g + c]].rjust(width) for c in range(g)]
            lines.append(" ".join([name.ljust(width)] + cells))
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (f"<GroupedReachability by {self.group_by} {self.protocol}/{self.port}, "
                f"{len(self._names)} groups>")
