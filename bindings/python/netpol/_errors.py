"""Exceptions raised by netpol.

Every error about the input is a ``ValueError``:

* :class:`ParseError` -- the text is not well-formed YAML/JSON, or a document cannot be decoded
  into a Namespace, Pod or NetworkPolicy (wrong type, unknown field, missing ``kind``): what
  ``kubectl apply`` would refuse before the API server validates anything.
* :class:`ValidationError` -- every object decoded, but some break the API server's validation
  rules (``spec.ingress[0].ports[1].endPort: must be greater than or equal to port``).

Both carry ``.errors`` (and ``.warnings``): :class:`netpol.Diagnostic` objects with ``kind``,
``object``, ``field``, ``message``, ``file`` and ``line``; ``str()`` of each is the same text the
``netpol`` command prints. np keeps at most 1000 findings: past that, the last entry counts
the rest (``omitted_errors``, ``omitted_warnings``).

A pod name that the cluster does not have raises :class:`PodNotFoundError`, a ``KeyError``
(the cluster is looked up by name, like a mapping): ``except KeyError`` catches it.
A path that does not exist raises the built-in ``FileNotFoundError``.
"""

from __future__ import annotations

from typing import Sequence

__all__ = [
    "InputError", "ParseError", "ValidationError", "PodNotFoundError", "NoPodsWarning",
]

_MAX_LISTED = 20


class InputError(ValueError):
    """The input could not be turned into a cluster. Base of ParseError and ValidationError."""

    def __init__(self, message: str, errors: Sequence = (), warnings: Sequence = ()):
        self.errors = list(errors)
        self.warnings = list(warnings)
        if self.errors:
            # Past 1000 findings np keeps a count: the last entry stands for the rest.
            count = sum(getattr(e, "omitted_errors", 0) or 1 for e in self.errors)
            shown = [e for e in self.errors if not getattr(e, "omitted_errors", 0)][:_MAX_LISTED]
            lines = [str(e) for e in shown]
            if count > len(shown):
                lines.append(f"... and {count - len(shown)} more errors")
            message = f"{count} error{'s' if count != 1 else ''} in the input:\n  " + "\n  ".join(
                lines
            )
        super().__init__(message)


class ParseError(InputError):
    """Malformed YAML/JSON, or a document that does not decode into its kind."""


class ValidationError(InputError):
    """Objects that the API server's validation would reject."""


class PodNotFoundError(KeyError):
    """No pod of that "namespace/name" in the cluster."""

    def __init__(self, message: str, pod: str):
        super().__init__(message)
        self.pod = pod
        self.message = message

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.message


class NoPodsWarning(UserWarning):
    """The input has NetworkPolicies but no pod that takes part in pod networking, so every
    reachability question about it would be answered without evaluating anything. pytest
    shows it in the warnings summary; ``-W error::netpol.NoPodsWarning`` makes it fail."""
