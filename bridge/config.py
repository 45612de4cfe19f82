"""Bridge configuration: YAML -> frozen dataclasses.

(Skeleton: device settings used by bridge.devices. The loader, validation with file:line errors and
the rest of the config are being written; keep these names and fields, add more as needed.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SerialDeviceConfig:
    """A serial device. ``port`` is anything pyserial's serial_for_url opens: /dev/tty*,
    /dev/serial/by-id/..., socket://host:port, rfc2217://host:port."""

    port: str
    baudrate: int = 115200
    newline: str = "\n"
    #: Longest accepted incoming line in bytes; longer ones are discarded and counted.
    max_line: int = 1024
    #: Ask the USB adapter for low latency (FTDI buffers 16 ms by default).
    low_latency: bool = True
    reopen_min_s: float = 0.2
    reopen_max_s: float = 5.0


@dataclass(frozen=True, slots=True)
class MqttDeviceConfig:
    """A device reached through an MQTT broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive: int = 30
    #: Retained online/offline topic with a last will; None -> "sigbridge/{client_id}/availability".
    availability_topic: str | None = None
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
