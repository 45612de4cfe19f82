"""Device links: thin asyncio pumps between the engine and the hardware.

``SerialLink`` (pyserial-asyncio-fast) and ``MqttLink`` (aiomqtt) share one shape: construct with the
device's config and callbacks, run ``run()`` as a task (it reconnects by itself until cancelled), read
``up``, write with ``write_line`` / ``publish`` (non-blocking, False when the command was not sent), read
counters from ``stats``.
"""

from bridge.devices.mqtt_link import MqttLink
from bridge.devices.serial_link import SerialLink

__all__ = ["MqttLink", "SerialLink"]
