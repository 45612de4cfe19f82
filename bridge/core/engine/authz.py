"""Per-rule authorisation: may this sender drive this rule?

The hub already refuses signals from roles that may not signal at all (subscriber, publisheronly), so a
rule only narrows further:

- ``from_roles``: the sender's role must be one of these (None: any role the hub lets signal);
- ``from_data``: a regex *searched* in the sender's connection data (the token's data, which the hub
  signed, so it cannot be forged by the client) - e.g. ``'"team":"lab-1"'`` or ``^operator:``;
- ``allow_rest``: signals with ``from`` null come from a server holding the API secret. They carry no
  connection, so ``from_roles`` / ``from_data`` cannot apply; such a signal passes exactly when the
  rule allows REST.

Pure: the regex is compiled once when the Authorizer is built, never per signal. Refusals are shared
immutable :class:`Verdict` objects with short reasons.
"""

from __future__ import annotations

import re

from bridge.core.engine.decisions import Decision, Verdict
from bridge.core.model import Rule
from bridge.core.signal import Connection

REST_REFUSED = Verdict(Decision.UNAUTHORISED, "REST signals not allowed by this rule")
DATA_REFUSED = Verdict(Decision.UNAUTHORISED, "connection data does not match from_data")


class Authorizer:
    """The authorisation of one rule (or of the e-stop reset, with ``from_roles=reset_roles``)."""

    __slots__ = ("_allow_rest", "_data", "_role_refusals", "_roles")

    def __init__(self, from_roles: frozenset[str] | None, from_data: str | None,
                 allow_rest: bool) -> None:
        """Raises ValueError when ``from_data`` is not a valid regex (the config loader reports it
        with file:line first; this is the last line of defence)."""
        self._roles = from_roles
        try:
            self._data = re.compile(from_data) if from_data is not None else None
        except re.error as exc:
            raise ValueError(f"from_data is not a valid regular expression: {exc}") from None
        self._allow_rest = allow_rest
        # One Verdict per role seen, built on first refusal: a flood from one role allocates nothing.
        self._role_refusals: dict[str, Verdict] = {}

    @classmethod
    def for_rule(cls, rule: Rule) -> Authorizer:
        return cls(rule.from_roles, rule.from_data, rule.allow_rest)

    @property
    def open(self) -> bool:
        """True when every connection is allowed (no role nor data restriction)."""
        return self._roles is None and self._data is None

    def allows(self, sender: Connection | None) -> Verdict | None:
        """None when ``sender`` may use the rule, else the refusal (decision ``unauthorised``).

        ``sender`` is the sender's Connection, or None for a REST signal (``from`` null)."""
        if sender is None:
            return None if self._allow_rest else REST_REFUSED
        if self._roles is not None and sender.role not in self._roles:
            return self._role_refusal(sender.role)
        if self._data is not None and self._data.search(sender.data) is None:
            return DATA_REFUSED
        return None

    def _role_refusal(self, role: str) -> Verdict:
        verdict = self._role_refusals.get(role)
        if verdict is None:
            allowed = ", ".join(sorted(self._roles or ()))
            # The role comes from a signed token and is one of a few names, but never trust it to be
            # short or printable: the reason ends up in acks and logs.
            shown = role if len(role) <= 32 and role.isprintable() else "(invalid)"
            verdict = Verdict(Decision.UNAUTHORISED, f"role {shown} not in from_roles [{allowed}]")
            if len(self._role_refusals) < 16:
                self._role_refusals[role] = verdict
        return verdict
