"""Control characters end to end: a real hub, a real `sigbridge run` process and a real pty (C1
controls and the Unicode separators in a string param never reach the device), and the real
`sigbridge check` / `sigbridge run` giving the same verdict on a tab in a safe action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Operator, ack, bridge_process, next_status
from tests.helpers.hub import running_hub
from tests.helpers.pty import PtyPair

ROOT = Path(__file__).resolve().parent.parent


async def test_c1_controls_and_separators_in_a_string_param_never_reach_the_pty(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "dev") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: c1, token: "{hub.token('c1')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}}}
                rules:
                  - signal: say
                    params: {{text: {{type: string, pattern: '.*'}}}}
                    ack: true
                    send: {{device: base, line: "SAY {{text}}", allow_tab: true}}
                """))
            async with SessionClient(hub.url, "c1", hub.token("c1", role="moderator")) as c:
                op = Operator(c)
                async with bridge_process(config):
                    await next_status(op, devices={"base": "up"})
                    # NEL, CSI (a terminal escape), the line and paragraph separators, DEL, and a tab
                    # (allow_tab lets the template text hold one, never a value).
                    for text in ["a\x85b", "a\x9b2J", "a\u2028b", "a\u2029b", "a\x7fb", "a\tb"]:
                        await op.send("say", {"text": text})
                        answer = await ack(op)
                        assert answer["status"] == "rejected", (text, answer)
                        assert "control character" in answer["reason"]
                    await op.send("say", {"text": "ok"})
                    assert (await ack(op))["status"] == "applied"
                    # The first bytes the device ever got are the good line: nothing refused came before.
                    assert await pair.read_line(timeout=scaled(5)) == "SAY ok"
                    assert pair.pending() == b""


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, "-m", "bridge", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_check_and_run_agree_on_a_tab_in_a_safe_action(tmp_path: Path) -> None:
    head = ('session: {url: "ws://127.0.0.1:9", session_id: s, token: t}\n'
            f'devices: {{base: {{serial: {{port: "{tmp_path / "nothing"}"}}}}}}\n')
    (tmp_path / "bridge.yaml").write_text(head + 'safety: {on_disconnect: [{device: base, line: "S\\t0"}]}\n')
    error = ("bridge.yaml:3: safety.on_disconnect[0].line: a line cannot hold control characters "
             "(found U+0009) (a tab needs allow_tab: true on this action): 'S\\t0'")
    check = _cli("check", "-c", "bridge.yaml", cwd=tmp_path)
    out, err = check.communicate(timeout=scaled(60))
    assert check.returncode == 2 and out == ""
    assert err.splitlines() == [error, "bridge.yaml: 1 error"]
    run = _cli("run", "-c", "bridge.yaml", cwd=tmp_path)
    out, err = run.communicate(timeout=scaled(60))
    assert run.returncode == 2, err
    assert err.splitlines() == [error, "bridge.yaml: 1 error; not starting"]     # no traceback

    # Allowed explicitly: check says OK and run starts (then stops cleanly on SIGTERM).
    (tmp_path / "bridge.yaml").write_text(
        head + 'safety: {on_disconnect: [{device: base, line: "S\\t0", allow_tab: true}]}\n')
    check = _cli("check", "-c", "bridge.yaml", cwd=tmp_path)
    out, err = check.communicate(timeout=scaled(60))
    assert check.returncode == 0, err
    run = _cli("run", "-c", "bridge.yaml", cwd=tmp_path)
    assert run.stderr is not None
    first = run.stderr.readline()
    assert "joining ws://127.0.0.1:9 session s" in first, first
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=scaled(30))
    assert run.returncode == 0, err
    assert "Traceback" not in err

