"""The argparse definitions of the operator tools (`try`, `replay`, `init`); light on purpose: they
are built for every `sigbridge --help`. ``TOOL_HANDLERS`` maps each command to the module and function
that does the work (imported only when that command runs)."""

from __future__ import annotations

import argparse
from typing import Any

TOOL_HANDLERS: dict[str, tuple[str, str]] = {
    "try": ("bridge.tools.dryrun", "try_main"),
    "replay": ("bridge.tools.replay", "replay_main"),
    "init": ("bridge.tools.init", "init_main"),
}

ROLES = ["moderator", "publisher", "publisheronly", "subscriber"]


def add_tool_parsers(sub: Any) -> None:
    """Add the tool commands to ``sub`` (the main parser's subparsers action)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "try", help="one signal through the rules, without touching a device",
        description="Run one signal through the real rule engine of a bridge.yaml without opening a "
                    "device or joining a session, and print the decision and exactly what would be "
                    "written (serial: the bytes as hex and as text; MQTT: topic, payload, QoS, retain). "
                    "Exit 0 when it would be written (applied or clamped), 1 when refused, 2 for a "
                    "config error.")
    p.add_argument("-c", "--config", metavar="FILE", required=True, help="bridge.yaml")
    p.add_argument("type", metavar="TYPE", help="signal type, e.g. robot.move")
    p.add_argument("data", metavar="DATA", nargs="?", default="", help="signal data (JSON)")
    p.add_argument("--role", default="moderator", choices=ROLES,
                   help="the sender's role (default moderator)")
    p.add_argument("--conn-data", metavar="D", default="", help="the sender's connection data")
    p.add_argument("--from-rest", action="store_true",
                   help="as a REST signal (no sender: from null)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = sub.add_parser(
        "replay", help="recorded signals through the rules; print (or compare) the device writes",
        description="Run recorded signals through the real rule engine of a bridge.yaml, without a "
                    "device: the JSON lines of 'sigbridge listen' or an audit log. Keeps their "
                    "original timing (watchdogs, rate limits and slew see it) unless --fast. Prints "
                    "every device write as one JSON line. With --expect, compares the writes with a "
                    "file of such lines: exit 0 when equal, 1 with the first difference.")
    p.add_argument("-c", "--config", metavar="FILE", required=True, help="bridge.yaml")
    p.add_argument("recording", metavar="FILE", help="JSON lines ('-' for stdin)")
    p.add_argument("--fast", action="store_true",
                   help="do not wait between signals (time still advances as recorded)")
    p.add_argument("--expect", metavar="FILE", help="expected writes (JSON lines, as printed)")
    p.add_argument("--role", default="moderator", choices=ROLES,
                   help="the role of a sender whose connectionCreated line is not in the recording, "
                        "and of every sender of an audit log (default moderator)")

    p = sub.add_parser(
        "init", help="first-run wizard: write a bridge.yaml, a token file and the systemd unit",
        description="Write a bridge.yaml that passes 'sigbridge check' and a token file (mode 0600) "
                    "for this robot, and print the systemd unit (--install writes it). Asks for what "
                    "the flags do not give, listing /dev/serial/by-id ports and probing a local MQTT "
                    "broker; with --yes it never asks (missing answers are an error).")
    p.add_argument("--url", help="hub base URL, e.g. wss://hub.example:8765 (env SIGBRIDGE_URL)")
    p.add_argument("--session", help="session id (env SIGBRIDGE_SESSION)")
    p.add_argument("--token", help="the bridge's token (publisher or moderator role; env "
                                   "SIGBRIDGE_TOKEN); or --mint with the hub's credentials")
    p.add_argument("--mint", action="store_true",
                   help="mint the bridge's token here (role publisher, data bridge:NAME, 30 days) from "
                        "SIGBRIDGE_API_KEY / SIGBRIDGE_API_SECRET or the hub's --state-dir")
    p.add_argument("--state-dir", metavar="DIR", help="with --mint: the hub's state dir")
    p.add_argument("--name", default="robot",
                   help="the bridge's name in its token data bridge:NAME (default robot)")
    p.add_argument("--serial", metavar="PORT", action="append", default=None,
                   help="a serial port to drive (repeatable; 'none' for no serial device)")
    p.add_argument("--baudrate", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument("--mqtt", metavar="HOST:PORT",
                   help="an MQTT broker to drive ('none' for no MQTT device; default: probe "
                        "127.0.0.1:1883)")
    p.add_argument("--dir", metavar="DIR", default=".",
                   help="where to write bridge.yaml and the token file (default .; /etc/sigbridge "
                        "on the robot)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--install", action="store_true",
                   help="write the systemd unit to --unit-dir instead of printing it")
    p.add_argument("--unit-dir", metavar="DIR", default="/etc/systemd/system",
                   help="where --install writes sigbridge.service (default /etc/systemd/system)")
    p.add_argument("--yes", action="store_true", help="never ask; every answer from flags or defaults")
