"""A pure bridge Engine for tests (bridge.core.engine: events in, commands out, no event loop): a
config with every kind of rule, connections, and readers for the commands it returns."""

from __future__ import annotations

import json
from typing import Any

from bridge.core.engine import ACK, Engine, Purge, SendSignal
from bridge.core.engine.actions import Notice
from bridge.core.events import Signal
from bridge.core.model import (
    BridgeConfig,
    Device,
    Estop,
    Expect,
    MqttAction,
    MqttDeviceConfig,
    MqttTelemetry,
    ParamSpec,
    Rule,
    Safety,
    SerialAction,
    SerialDeviceConfig,
    SerialTelemetry,
    SessionSettings,
    Watchdog,
)
from bridge.core.signal import Connection

STOP = SerialAction("base", "M 0 0")
XY = (ParamSpec("x", "float", min=-1, max=1), ParamSpec("y", "float", min=-1, max=1))


def make_config(**over: Any) -> BridgeConfig:
    rules = (
        Rule(0, "robot.move", params=XY, send=(SerialAction("base", "M {x:.2f} {y:.2f}"),),
             max_age_ms=300, watchdog=Watchdog(500, (STOP,)), ack=True),
        Rule(1, "arm.grip", params=(ParamSpec("force", "int", min=0, max=100, on_range="clamp"),),
             send=(MqttAction("arm", "arm/grip/set", {"force": "{force}"}, qos=1),)),
        Rule(2, "robot.ping",
             send=(SerialAction("base", "P", expect=Expect(r"PONG (?P<n>\d+)", 200, "robot.pong")),)),
        Rule(3, "mod.*", send=(SerialAction("base", "X"),), from_roles=frozenset({"moderator"}), ack=True),
        Rule(4, "rest.ok", send=(SerialAction("base", "R"),), allow_rest=True),
    )
    base: dict[str, Any] = dict(
        source="test.yaml",
        session=SessionSettings("ws://127.0.0.1:1", "s", "t"),
        devices={"base": Device("base", serial=SerialDeviceConfig("/dev/null")),
                 "arm": Device("arm", mqtt=MqttDeviceConfig())},
        rules=rules,
        telemetry=(SerialTelemetry("base", r"T (?P<battery>\d+) (?P<speed>-?[\d.]+)", "robot.telemetry",
                                   max_rate_hz=10),
                   MqttTelemetry("arm", "arm/state/#", "arm.state")),
        safety=Safety(on_disconnect=(STOP,), on_shutdown=(SerialAction("base", "BYE"),),
                      on_controller_lost=(STOP,),
                      estop=Estop("robot.estop", "robot.estop_reset", send=(SerialAction("base", "S"),))),
    )
    base.update(over)
    return BridgeConfig(**base)


OP = Connection("op1", "", "publisher", 0)
MOD = Connection("mod1", "", "moderator", 0)
NOW_MS = 1_000_000


def sig(type_: str, data: object = "", sender: Connection | None = OP, seq: int = 1,
        ts: int = NOW_MS) -> Signal:
    """A signal received when the hub's clock read NOW_MS (its age: NOW_MS - ts)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return Signal(type_, text, sender.id if sender else None, seq, ts, NOW_MS - ts)


def send(e: Engine, type_: str, data: object = "", sender: Connection | None = OP, now: float = 0.0,
         ts: int = NOW_MS, seq: int = 1) -> list[Any]:
    """``sender`` joins (as the session client tells the engine), then sends."""
    if sender is not None:
        e.connection_created(sender, now)
    return e.signal(sig(type_, data, sender, seq, ts), now)


def engine() -> Engine:
    e = Engine(make_config())
    e.link_up("bridge1", 0.0)
    return e


def acks(out: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(c.data) for c in out if isinstance(c, SendSignal) and c.type == ACK]


def writes(out: list[Any]) -> list[Any]:
    return [c for c in out if not isinstance(c, SendSignal | Purge | Notice)]
