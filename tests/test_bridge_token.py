"""`sigbridge token --bridge NAME` mints the bridge's token: connection data `bridge:NAME`, the mark the
console trusts (docs/console.md, "Whom the console trusts")."""

from __future__ import annotations

import jwt
import pytest

from bridge.cli import main


def test_bridge_flag_sets_the_trusted_connection_data(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SIGBRIDGE_API_KEY", "12345678")
    monkeypatch.setenv("SIGBRIDGE_API_SECRET", "s" * 40)
    assert main(["token", "lab-1", "--bridge", "rover-1"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert (claims["connection_data"], claims["role"]) == ("bridge:rover-1", "publisher")
    assert main(["token", "lab-1", "--bridge", "rover-1", "--data", "alice"]) == 2
    assert "not both" in capsys.readouterr().err
