"""`sigbridge demo`: a session hub, the simulated rover on a pseudo-terminal and a bridge running
config/demo.yaml, all on this machine, with ready-to-paste commands to drive the rover.

What runs: the hub in this process (on ``--listen``, with API credentials generated in a temporary state
dir), ``firmware_stubs/rover_sim.py`` as a child process (it prints its pty path), and ``sigbridge run
-c config/demo.yaml`` as a child process with SIGBRIDGE_ROVER_PORT / SIGBRIDGE_URL / SIGBRIDGE_SESSION /
SIGBRIDGE_TOKEN set, exactly as a person would start it by hand. Once the bridge reports READY, the
session id, an operator (moderator) token, the console URL, the `sigbridge send` / `listen` commands
and the `sigbridge token` command that mints a second operator's token (from the demo's state dir) are
printed on stdout. Ctrl-C or SIGTERM stops the bridge (its on_shutdown actions run), the rover and
the hub, and removes the temporary state; exit 0.

``--embedded``: no hub; the bridge hosts the session itself (``session.embedded`` on ``--listen``,
the demo's state dir holding its credentials): the operator reaches the rover in one hop. The config is
config/demo.yaml with its ``session:`` block swapped for the embedded one (written to the state dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from bridge.camera.demo import start_demo_camera
from bridge.config.hub import HubConfig, HubConfigError, load_or_create_credentials, parse_listen
from bridge.core.tokens import mint_client_token, new_session_id
from bridge.hub.run import start_hub

ROOT = Path(__file__).resolve().parents[2]  # the checkout: bridge/tools/demo.py -> ../..
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
ROVER_SIM = ROOT / "firmware_stubs" / "rover_sim.py"
START_TIMEOUT_S = 30.0
TOKEN_TTL_S = 7 * 86400


def demo_main(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except HubConfigError as exc:
        print(f"sigbridge demo: {exc}", file=sys.stderr)
        return 2
    for needed in (DEMO_CONFIG, ROVER_SIM):
        if not needed.exists():
            print(f"sigbridge demo: {needed} is missing (the demo runs from a source checkout)",
                  file=sys.stderr)
            return 1
    try:
        return asyncio.run(_demo(host, port, bool(getattr(args, "embedded", False))))
    except KeyboardInterrupt:
        return 130


def embedded_config(state: Path, host: str, port: int) -> Path:
    """config/demo.yaml with its ``session:`` block replaced by ``session.embedded`` (in ``state``)."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    block = (f'session:\n  session_id: ${{SIGBRIDGE_SESSION}}\n  embedded: {{listen: "{host}:{port}", '
             f'state_dir: "{state}"}}\n')
    path = state / "demo-embedded.yaml"
    path.write_text(re.sub(r"^session:\n(?:[ ]+.*\n)+", block, text, count=1, flags=re.M), encoding="utf-8")
    return path


async def _demo(host: str, port: int, embedded: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with tempfile.TemporaryDirectory(prefix="sigbridge-demo-") as state:
        key, secret, _ = load_or_create_credentials(Path(state))
        hub = None
        if not embedded:
            try:
                hub = await start_hub(HubConfig(api_key=key, api_secret=secret, host=host, port=port,
                                                credentials_source="demo"))
            except OSError as exc:
                print(f"sigbridge demo: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
                return 1
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else f"[{host}]" if ":" in host else host
        ws_url, http_url = (hub.url, hub.http_url) if hub else (f"ws://{shown}:{port}", f"http://{shown}:{port}")
        config = DEMO_CONFIG if hub else embedded_config(Path(state), host, port)
        children: list[asyncio.subprocess.Process] = []
        try:
            now = time.time()
            session = new_session_id(key, now=now)
            op_token = mint_client_token(api_key=key, api_secret=secret, session_id=session,
                                         role="moderator", data="operator", ttl_s=TOKEN_TTL_S, now=now)
            bridge_token = mint_client_token(api_key=key, api_secret=secret, session_id=session,
                                             role="publisher", data="bridge:rover", ttl_s=TOKEN_TTL_S,
                                             now=now)
            rover = await asyncio.create_subprocess_exec(
                sys.executable, str(ROVER_SIM), stdout=asyncio.subprocess.PIPE)
            children.append(rover)
            rover_port = await _rover_port(rover)
            env = dict(os.environ, SIGBRIDGE_ROVER_PORT=rover_port, SIGBRIDGE_URL=ws_url,
                       SIGBRIDGE_SESSION=session, SIGBRIDGE_TOKEN=bridge_token)
            bridge = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "run", "-c", str(config), env=env,
                stderr=asyncio.subprocess.PIPE)
            children.append(bridge)
            await _wait_ready(bridge)
            camera, camera_line = await start_demo_camera(dict(env, SIGBRIDGE_TOKEN=mint_client_token(
                api_key=key, api_secret=secret, session_id=session, role="publisher", data="camera",
                ttl_s=TOKEN_TTL_S, now=now)))
            children += [camera] if camera is not None else []
            _print_instructions(ws_url, http_url, session, op_token, state, embedded=hub is None)
            print(camera_line, flush=True)
            relay = asyncio.create_task(_relay(bridge))
            ended = asyncio.create_task(bridge.wait())
            waiting = asyncio.create_task(stop.wait())
            await asyncio.wait({ended, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if ended.done():
                print(f"sigbridge demo: the bridge exited with {bridge.returncode}", file=sys.stderr)
            await _stop_all(children)
            await relay
            print("sigbridge demo: stopped", file=sys.stderr, flush=True)
            return 0 if not ended.done() or stop.is_set() else 1
        except (RuntimeError, TimeoutError) as exc:
            print(f"sigbridge demo: {exc}", file=sys.stderr)
            return 1
        finally:
            await _stop_all(children)
            if hub is not None:
                await hub.close()


async def _rover_port(rover: asyncio.subprocess.Process) -> str:
    assert rover.stdout is not None
    line = await asyncio.wait_for(rover.stdout.readline(), START_TIMEOUT_S)
    text = line.decode().strip()
    if not text.startswith("PORT "):
        raise RuntimeError(f"the rover simulator did not start (said {text!r})")
    return text[5:]


async def _wait_ready(bridge: asyncio.subprocess.Process) -> None:
    """Relay the bridge's stderr until it reports READY (or fails)."""
    assert bridge.stderr is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            line = await bridge.stderr.readline()
            if not line:
                raise RuntimeError(f"the bridge exited with {await bridge.wait()} before it was ready")
            sys.stderr.write(line.decode(errors="replace"))
            if b"READY" in line:
                sys.stderr.flush()
                return


async def _relay(bridge: asyncio.subprocess.Process) -> None:
    assert bridge.stderr is not None
    while line := await bridge.stderr.readline():
        sys.stderr.write(line.decode(errors="replace"))
        sys.stderr.flush()


async def _stop_all(children: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM, newest first (the bridge before the rover, so its on_shutdown line reaches the rover)."""
    for proc in reversed(children):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _print_instructions(ws_url: str, http_url: str, session: str, token: str, state: str,
                        embedded: bool = False) -> None:
    env = (f"export SIGBRIDGE_URL={shlex.quote(ws_url)} SIGBRIDGE_SESSION={shlex.quote(session)} "
           f"SIGBRIDGE_TOKEN={shlex.quote(token)}")
    # The demo hub's credentials live in its temporary state dir: `sigbridge token` must read them
    # there (its default state dir holds other credentials, or none), never generate its own.
    mint = (f"sigbridge token {shlex.quote(session)} --role moderator --data operator-2 "
            f"--state-dir {shlex.quote(state)}")
    if embedded:
        what = f"no hub: the bridge hosts the session on {ws_url} (one hop), simulated rover"
        other = ("The same with a separate hub (the way across networks): sigbridge demo")
    else:
        what = f"hub {ws_url}, simulated rover, bridge with {DEMO_CONFIG.name}"
        other = ("The same in one hop, the bridge hosting its session (no hub): sigbridge demo --embedded")
    print(f"""
signal-bridge demo is running: {what}

  session:         {session}
  operator token:  {token}
  console:         {http_url}/#session={session}&token={token}

In another terminal:
  {env}
  sigbridge listen
  sigbridge send robot.move '{{"x":0.5,"y":0}}'
  sigbridge send robot.estop
  sigbridge send robot.estop_reset

A token for a second operator (valid while the demo runs):
  {mint}

  state directory: {state}  (the demo hub's credentials; removed when it stops)
  sigbridge on your PATH: export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH

{other}

Ctrl-C stops everything.
""", flush=True)
