"""What a config reload (SIGHUP) can apply live, and what needs a restart.

Applied live, by swapping in a new engine (``Engine.take_over``): rules, telemetry streams of serial
devices, safety actions, e-stop, control lease settings, the audit log settings, and a new session
token (renewal: the link up now is kept; the next new connection uses the new token). The session link
and the device links are kept as they are (same connection id, ports and broker connections not
reopened).

Needs a restart (the reload is then refused as a whole and the running config kept): a change to the
session URL or session id, to ``devices`` (ports, brokers, heartbeats, added or removed devices), or to
the MQTT topics a device subscribes to for telemetry (the link subscribes once, when it connects).
Refusing rather than applying half keeps one rule simple: after a reload the daemon runs either the
whole new file or the whole old one. Also refused: a config without ``safety.estop`` while the e-stop
is latched (the latch is kept across a reload, and nothing could reset it).

Pure: compares two frozen configs.
"""

from __future__ import annotations

from bridge.core.model import BridgeConfig, MqttTelemetry


def restart_needed(old: BridgeConfig, new: BridgeConfig, *, estopped: bool = False) -> list[str]:
    """Why ``new`` cannot be applied live to a daemon running ``old`` (empty: it can).

    ``estopped``: the latch is set now. A reload keeps it latched, so a new config without an e-stop
    section (hence without a reset signal) is refused: it would latch the bridge for good."""
    reasons: list[str] = []
    if estopped and new.safety.estop is None:
        reasons.append("the e-stop is latched and the new config has no safety.estop to reset it "
                       "(reset it first)")
    # A new token alone is fine: the link up now stays as it is, the next new connection uses it.
    if (new.session.url, new.session.session_id) != (old.session.url, old.session.session_id):
        reasons.append("session url or session_id changed (needs a restart)")
    for name in sorted(old.devices.keys() | new.devices.keys()):
        before, after = old.devices.get(name), new.devices.get(name)
        if before is None:
            reasons.append(f"device {name} added (needs a restart)")
        elif after is None:
            reasons.append(f"device {name} removed (needs a restart)")
        elif before != after:
            reasons.append(f"device {name} changed (needs a restart)")
        elif _mqtt_topics(old, name) != _mqtt_topics(new, name):
            reasons.append(f"device {name}: MQTT telemetry topics changed (needs a restart)")
    return reasons


def _mqtt_topics(config: BridgeConfig, device: str) -> set[str]:
    return {t.topic for t in config.telemetry if isinstance(t, MqttTelemetry) and t.device == device}
