"""MQTT topic names and filters: the one check of both, for the config loader and the MQTT link.

Built on aiomqtt's `Topic` (something to publish to: no ``+`` or ``#``) and `Wildcard` (a
subscription filter: ``+`` a whole level, ``#`` a whole last level), which also bound the length;
beside them a NUL (which MQTT forbids in a topic) and, in a topic, any control character
(`bridge.core.controls`) are refused. Outside `bridge.core` because aiomqtt imports paho.
"""

from __future__ import annotations

from bridge.devices import paho_client  # noqa: F401  # first: paho without dnspython

# isort: split
from aiomqtt import Topic, Wildcard

from bridge.core.controls import first_control

__all__ = ["check_filter", "check_topic", "filter_ok", "topic_ok"]


def topic_ok(text: str) -> bool:
    """True when ``text`` may be published to (no wildcard, not empty, no NUL)."""
    try:
        Topic(text)
    except ValueError:
        return False
    return "\x00" not in text


def filter_ok(text: str) -> bool:
    """True when ``text`` is a valid subscription filter (``+`` / ``#`` whole levels, ``#`` last)."""
    try:
        Wildcard(text)
    except ValueError:
        return False
    return "\x00" not in text


def check_topic(text: str) -> None:
    """Raise ValueError unless ``text`` is a topic to publish to, free of control characters."""
    if not topic_ok(text):
        raise ValueError(f"invalid MQTT topic {text!r}: not empty, no + or #, no NUL")
    control = first_control(text)
    if control is not None:
        raise ValueError(f"invalid MQTT topic {text!r}: a control character ({control})")


def check_filter(text: str) -> None:
    """Raise ValueError unless ``text`` is a valid MQTT subscription filter."""
    if not filter_ok(text):
        raise ValueError(f"invalid MQTT topic filter {text!r}: '+' and '#' must be whole levels, "
                         "'#' only the last")
