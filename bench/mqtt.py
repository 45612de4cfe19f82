"""MQTT path: operator ``signal("arm.grip")`` -> hub -> bridge rule publishing QoS 1 to a real mosquitto
-> a subscriber in the bench (baseline: bare websockets relay -> bare client doing a paho QoS 1 publish
-> the same mosquitto and subscriber). Latency by ping-pong, then a flood for throughput and loss."""

from __future__ import annotations

import json

from bench.common import Results
from bench.pingpong import Probe, Waiters, latency_benchmark, seq_of_json
from bench.rig import Rig, Side
from bench.throughput import MQTT_E2E_WINDOW, flood_benchmark, install_mqtt, overload


def _install(side: Side, waiters: Waiters) -> None:
    side.on_mqtt = lambda payload, t: waiters.arrived(seq_of_json(payload), t)


def grip_data(n: int) -> str:
    return json.dumps({"force": 40, "n": n})


async def _fire(side: Side, n: int) -> None:
    await side.send("arm.grip", grip_data(n))


MQTT = Probe("mqtt", _install, _fire)


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """No target of its own in the issue; the command-latency ratios are printed as a guide."""
    rounds, samples, warmup = (2, 20, 5) if quick else (6, 300, 50)
    await latency_benchmark(rig, results, MQTT, "mqtt latency", rounds=rounds, samples=samples, warmup=warmup,
                            p50_target=1.3, p99_target=2.0)
    f_rounds, seconds, max_count = (1, 0.3, 300) if quick else (3, 3.0, 200_000)
    await flood_benchmark(rig, results, "mqtt throughput", "arm.grip", grip_data, install_mqtt,
                          rounds=f_rounds, seconds=seconds, max_count=max_count, target=None,
                          e2e_window=MQTT_E2E_WINDOW)
    await overload(rig, results, "mqtt throughput", "arm.grip", grip_data, install_mqtt,
                   300 if quick else 10_000)
