"""`sigbridge` command line: argparse front end. Each command's work lives in its own module and is
imported only when that command runs, so `sigbridge --help` stays fast and light."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.tools.parsers import TOOL_HANDLERS, add_tool_parsers

# command -> (module, function); the function takes the parsed Namespace and returns an exit code.
_HANDLERS: dict[str, tuple[str, str]] = {
    "hub": ("bridge.hub.run", "main"),
    "token": ("bridge.config.hub", "token_main"),
    "app": ("bridge.config.apps", "app_main"),
    "run": ("bridge.daemon.runner", "run_main"),
    "check": ("bridge.config", "check_main"),
    "send": ("bridge.tools.send", "send_main"),
    "listen": ("bridge.tools.listen", "listen_main"),
    "demo": ("bridge.tools.demo", "demo_main"),
    "camera": ("bridge.camera.daemon", "camera_main"),
    **TOOL_HANDLERS,
}


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", action="append", metavar="URL",
                   help="hub base URL, e.g. ws://127.0.0.1:8765 (env SIGBRIDGE_URL); for hubs that share "
                        "sessions repeat it or separate URLs with commas: tried in order")
    p.add_argument("--session", default=os.environ.get("SIGBRIDGE_SESSION"),
                   help="session id (env SIGBRIDGE_SESSION)")
    p.add_argument("--token", default=os.environ.get("SIGBRIDGE_TOKEN"),
                   help="client token (env SIGBRIDGE_TOKEN); prefer the variable, "
                        "command lines are visible to other users")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigbridge",
        description="signal-bridge: drive serial and MQTT hardware from a signaling session.",
        epilog="Run 'sigbridge COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"sigbridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v: INFO, -vv: DEBUG); default WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("hub", help="run the session hub (WebSocket + REST + web console)",
                       description="Run the session hub: wire protocol v1 on /v1/session/{id}, the "
                                   "OpenTok-compatible REST API, /healthz, /metrics and the web console.")
    p.add_argument("-c", "--config", metavar="FILE", help="hub.yaml (see config/hub.example.yaml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8765)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where generated API credentials are kept (default ~/.local/state/sigbridge, "
                        "or $STATE_DIRECTORY under systemd)")

    p = sub.add_parser("token", help="mint a client token (JWT) for a session",
                       description="Mint an OpenTok-compatible JWT client token with the hub's API "
                                   "key and secret: from SIGBRIDGE_API_KEY/SIGBRIDGE_API_SECRET, the "
                                   "hub.yaml of --config, or the hub's state dir (said on stderr). "
                                   "Credentials are never generated unless --create is given.")
    p.add_argument("session", metavar="SESSION", nargs="?", default=os.environ.get("SIGBRIDGE_SESSION"),
                   help="session id (default: env SIGBRIDGE_SESSION)")
    p.add_argument("--role", default="publisher",
                   choices=["moderator", "publisher", "publisheronly", "subscriber"],
                   help="token role (default publisher)")
    p.add_argument("--data", default="", help="connection data visible to others (<= 1000 chars)")
    p.add_argument("--bridge", metavar="NAME",
                   help="a bridge's token: connection data 'bridge:NAME', the mark the console trusts "
                        "(instead of --data)")
    p.add_argument("--ttl", type=int, default=86400, help="lifetime in seconds (default 86400, max 30 days)")
    p.add_argument("-c", "--config", metavar="FILE", help="hub.yaml to take credentials from")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the hub's state dir, where it keeps its generated credentials (default "
                        "~/.local/state/sigbridge, or $STATE_DIRECTORY)")
    p.add_argument("--create", action="store_true",
                   help="generate credentials in the state dir when it has none (a hub must then use "
                        "the same state dir to accept the token)")

    p = sub.add_parser("app", help="create a Vonage-style application (key pair) for the hub",
                       description="Generate an RSA key pair for a new application: the public key goes "
                                   "into the hub's state dir (read at start), the private key to "
                                   "--private-key (mode 0600) for the vonage SDK. Prints only the id.")
    p.add_argument("action", choices=["create"], help="create: a new application")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the hub's state dir (default ~/.local/state/sigbridge, or $STATE_DIRECTORY)")
    p.add_argument("--private-key", metavar="FILE",
                   help="where to write the private key (default ./APPLICATION_ID.key; never overwritten)")

    p = sub.add_parser("run", help="run the bridge daemon",
                       description="Join the session (session.url; or host it, session.embedded: one hop "
                                   "for operators on the LAN, see docs/embedded.md) and drive the devices "
                                   "of a bridge.yaml. Exit 0 after "
                                   "SIGTERM/SIGINT; 2 when the config has errors (the same file:line "
                                   "errors as 'sigbridge check'); 78 when its token can never work (the "
                                   "hub refuses it, or its role cannot send signals).")
    _add_config_file(p)

    p = sub.add_parser("check", help="validate a bridge config",
                       description="Validate a bridge.yaml; exit 0 when good, 2 with file:line errors.")
    _add_config_file(p)

    p = sub.add_parser("send", help="send one signal",
                       description="Send one signal and exit 0 when the hub accepted it, 1 with the "
                                   "error code otherwise. With --ack, also wait for the bridge's "
                                   "bridge.ack of that command, print it as one JSON line and exit 0 "
                                   "(applied or clamped), 1 (refused) or 124 (no answer in time).")
    p.add_argument("type", metavar="TYPE", help="signal type, e.g. robot.move")
    p.add_argument("data", metavar="DATA", nargs="?", default="", help="signal data (a string, often JSON)")
    p.add_argument("--to", metavar="CONNECTION", help="send to one connection id instead of everyone")
    p.add_argument("--no-retry", action="store_true",
                   help="fail at once instead of queueing while reconnecting")
    p.add_argument("--ack", action="store_true",
                   help="wait for the bridge's bridge.ack (the rule needs ack: true); an 'id' is added "
                        "to JSON object data that has none, to match the answer")
    p.add_argument("--timeout", metavar="S", type=_positive, default=5.0,
                   help="with --ack: seconds to wait for the answer (default 5)")
    _add_connection_flags(p)

    p = sub.add_parser("listen", help="print signals as JSON lines",
                       description="Print each received signal (and connection event) as one JSON "
                                   "object per line until interrupted, --count events were printed or "
                                   "--timeout passed. Exit 0; 124 when --count was not reached in time; "
                                   "1 when the session ended otherwise.")
    p.add_argument("--type", metavar="GLOB",
                   help="only events whose signal type (or, for connection events, event name such as "
                        "connectionCreated) matches, e.g. 'robot.*'")
    p.add_argument("--count", metavar="N", type=_positive_int, help="exit after printing N events")
    p.add_argument("--timeout", metavar="S", type=_positive, help="exit after S seconds")
    _add_connection_flags(p)

    p = sub.add_parser("demo", help="hub + simulated rover + bridge, prints the console URL",
                       description="Start a hub, the rover simulator on a pseudo-terminal and a bridge "
                                   "with config/demo.yaml (--embedded: no hub, the bridge hosts the "
                                   "session, one hop); Ctrl-C stops everything.")
    p.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8765",
                   help="hub address (default 127.0.0.1:8765)")
    p.add_argument("--embedded", action="store_true",
                   help="no hub: the bridge hosts the session itself on --listen (session.embedded), "
                        "one hop from operator to rover; without it, a separate hub, as across networks")
    p = sub.add_parser("camera", help="run the camera daemon (WebRTC video to operators)",
                       description="Join the session as the robot's camera and stream it to each "
                                   "operator who asks, over WebRTC, signaled with camera.* signals "
                                   "(docs/camera.md). Needs the camera extra: pip install "
                                   "'signal-bridge[camera]'. Exit 0 after SIGTERM/SIGINT; 2 for config "
                                   "errors (file:line); 78 when the hub refuses its token or aiortc is "
                                   "missing; 1 when the session is lost for good.")
    p.add_argument("-c", "--config", metavar="FILE", required=True, help="camera.yaml")
    add_tool_parsers(sub)
    # Global flags are accepted after the command too (`sigbridge listen -v`, not only `sigbridge -v
    # listen`): every command gets them; its own count is kept apart (dest) and added in main().
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", dest="command_verbose", action="count", default=0,
                             help=argparse.SUPPRESS)
    return parser


def _add_config_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_file", metavar="FILE", nargs="?", help="bridge.yaml (or -c FILE)")
    p.add_argument("-c", "--config", metavar="FILE", help="bridge.yaml")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _normalise(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rules argparse cannot say: one config file (positional or -c), a session for token."""
    if hasattr(args, "config_file"):
        if args.config_file and args.config and args.config_file != args.config:
            parser.error(f"{args.command}: give the config once (FILE or -c FILE), not both")
        args.config = args.config or args.config_file
        if not args.config:
            parser.error(f"{args.command}: a config file is needed (FILE or -c FILE)")
    if args.command == "token" and not args.session:
        parser.error("token: a session id is needed (SESSION or env SIGBRIDGE_SESSION)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _normalise(parser, args)
    _setup_logging(args.verbose + getattr(args, "command_verbose", 0))
    module_name, func_name = _HANDLERS[args.command]
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sigbridge listen | head -1`): end quietly. stdout is pointed at
        # /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _setup_logging(verbosity: int) -> None:
    import logging

    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
