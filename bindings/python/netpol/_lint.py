"""netpol.Finding: what Cluster.lint() returns (np/analysis/lint.h has the checks)."""

from __future__ import annotations

from typing import NamedTuple, Optional


class Finding(NamedTuple):
    """One lint finding: a stable code ("NP102") and name ("peer-matches-nothing"), a
    severity ("error", "warning" or "info"), the object (kind "NetworkPolicy" or
    "Namespace", "namespace/name"), the field path in upstream's spelling
    ("spec.ingress[0].from[1].podSelector"; "" for the whole object), where it is (file and
    1-based line; None when unknown) and the message. ``str()`` gives the line
    ``netpol lint`` prints."""

    code: str
    name: str
    severity: str
    kind: str
    object: str
    field: str
    file: Optional[str]
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{self.code} {self.severity} {self.kind} {self.object}: {field}{self.message}"
