"""The hub announces its per-connection rate limit in ``connected`` (``limits.rate``/``limits.burst``),
the Python client exposes it (``SessionClient.rate_limit``), and the pacer can be retuned to it.
The bridge pacing itself under it end to end: tests/test_describe_e2e.py."""

from __future__ import annotations

import json

import pytest

from bridge.client import SessionClient
from bridge.core.engine.pacing import Pacer
from bridge.core.wire import ProtocolError, parse_hub_frame
from tests.helpers.hub import raw_connect, running_hub

CONN = {"id": "c1", "data": "", "role": "publisher", "creation_time": 1}


def connected(limits: object) -> str:
    return json.dumps({"op": "connected", "connection": CONN, "connections": [], "resume_secret": "s",
                       "resumed": False, "server_time": 5, "limits": limits})


def test_the_client_reads_rate_and_burst_from_limits() -> None:
    frame = parse_hub_frame(connected({"max_type": 128, "max_data": 8192, "rate": 20, "burst": 30.5}))
    assert getattr(frame, "rate_limit", None) == (20.0, 30.5)
    for none in ({"max_type": 128, "max_data": 8192}, None, "x"):     # no limit announced, older hub
        assert getattr(parse_hub_frame(connected(none)), "rate_limit", "missing") is None
    for bad in ({"rate": "20"}, {"rate": 0}, {"rate": -1}, {"rate": 20, "burst": True}, {"rate": None}):
        with pytest.raises(ProtocolError, match="limits"):
            parse_hub_frame(connected(bad))


async def test_a_real_hub_announces_its_limit_and_none_when_unlimited() -> None:
    async with running_hub(rate_limit=20, rate_burst=30) as hub:
        frame = await raw_connect(hub, "s1")
        assert frame.connected["limits"] == {"max_type": 128, "max_data": 8192, "rate": 20, "burst": 30}
        await frame.close()
        async with SessionClient(hub.url, "s1", hub.token("s1")) as client:
            assert client.rate_limit == (20.0, 30.0)
    async with running_hub(rate_limit=0) as hub, SessionClient(hub.url, "s1", hub.token("s1")) as client:
        assert client.rate_limit is None


def test_a_retuned_pacer_sends_at_the_new_rate_and_keeps_at_most_the_new_burst() -> None:
    pacer: Pacer[int] = Pacer(500, 1000, 0.0)
    pacer.retune(18, 18, 0.0)
    assert pacer.rate == (18, 18.0)
    sent = [i for i in range(30) if pacer.offer(i, True, 0.0)]
    assert sent == list(range(18))                    # the burst, capped from 1000 to 18
    assert pacer.due(0.5) == list(range(18, 27))      # then 18/s
    with pytest.raises(ValueError):
        pacer.retune(0, 18, 1.0)
