"""A broken rule of docs/draw-spec.md, named by its number.

Every rule a verifier checks has a number in the spec (`R12.4.2`, ...). `stimulus-verify` prints
`FAIL <rule>: <reason>`, so another implementation can be compared with it rule for rule on the
conformance cases in docs/conformance/. Imports nothing: the offline verifier uses this module.
"""

from __future__ import annotations


class Violation(ValueError):
    """The first rule found broken; verification stops there."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(rule, reason)  # both in args, so the error survives a trip between processes
        self.rule = rule
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


def require(condition: bool, rule: str, reason: str) -> None:
    if not condition:
        raise Violation(rule, reason)
