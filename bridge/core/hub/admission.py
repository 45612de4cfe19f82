"""The hub's admission rules as pure functions: one place for each refusal, whichever way the request
came (WebSocket or REST) and whichever engine holds the session (the Redis engine's scripts apply the
same rules to the same values). Each returns None (admitted) or the refusal ``(code, message)``."""

from __future__ import annotations

import secrets

from bridge.core.signal import (
    FORBIDDEN,
    MODERATOR,
    NOT_FOUND,
    SIGNALLING_ROLES,
    TOO_MANY,
    check_signal,
)

Refusal = tuple[int, str]

RATE_LIMITED: Refusal = (TOO_MANY, "rate limit exceeded, slow down")
NO_SUCH_CONNECTION: Refusal = (NOT_FOUND, "no connection with that id in this session")
NOT_A_MODERATOR: Refusal = (FORBIDDEN, "only a moderator may force a disconnect")


def signal_refusal(role: str | None, type_: object, data: object, limited: bool = False) -> Refusal | None:
    """May a signal of ``type_``/``data`` go out? ``role`` is the sender's, None for a REST caller (a
    server with the project's or an application's credentials may always signal); ``limited``: the
    frame came past the sender's rate limit. The target is checked by the engine (404)."""
    if limited:
        return RATE_LIMITED
    if role is not None and role not in SIGNALLING_ROLES:
        return (FORBIDDEN, f"role {role} may not send signals")
    checked = check_signal(type_, data)
    return None if checked is None else (checked.code, checked.message)


def force_refusal(role: str | None) -> Refusal | None:
    """May a connection of ``role`` (None: a REST caller) force another out? Only a moderator may."""
    return None if role is None or role == MODERATOR else NOT_A_MODERATOR


def caps_refusal(in_session: int, of_token: int, max_per_session: int, max_per_token: int) -> str | None:
    """The cap (``"session"`` or ``"token"``) a new connection would break, given how many members the
    session and the token have now (grace windows included); None when it may join. 0 = no cap."""
    if max_per_session and in_session >= max_per_session:
        return "session"
    if max_per_token and of_token >= max_per_token:
        return "token"
    return None


def cap_message(cap: str) -> Refusal:
    """The refusal of a connection over a cap of :func:`caps_refusal`."""
    return (TOO_MANY, f"too many connections for this {cap} (hub.yaml max_connections_per_{cap})")


def resume_refusal(wait_s: float, grant: tuple[str, str], member: tuple[str, str], expected_secret: str,
                   secret: str) -> tuple[Refusal, bool] | None:
    """May a token granting ``grant`` (role, data) resume a member of ``member`` (role, data) with
    ``secret``? ``wait_s`` is what the presenting token still has to wait after wrong secrets. The
    refusal comes with True when it was a wrong secret (the caller throttles the token). A secret of
    any shape is compared as bytes, in constant time."""
    if wait_s > 0:
        return (TOO_MANY, f"too many wrong resume secrets, retry in {wait_s:.1f} s"), False
    if grant != member:
        return (FORBIDDEN, "this token is not the one of the connection it tries to resume"), False
    if not secrets.compare_digest(expected_secret.encode(), secret.encode("utf-8", "surrogatepass")):
        return (FORBIDDEN, "resume secret does not match that connection"), True
    return None


def socket_refusal(open_now: int, from_address: int, max_connections: int,
                   max_per_address: int) -> str | None:
    """The process cap (``"hub"`` or ``"address"``) a new WebSocket would break; None to accept it."""
    if max_connections and open_now >= max_connections:
        return "hub"
    if max_per_address and from_address >= max_per_address:
        return "address"
    return None
