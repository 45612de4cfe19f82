"""Device links: thin asyncio pumps between the engine and the hardware.

``SerialLink`` (pyserial-asyncio-fast) and ``MqttLink`` (aiomqtt) share one shape: construct with the
device's config and callbacks, run ``run()`` as a task (it reconnects by itself until cancelled), read
``up``, write with ``write_line`` / ``publish`` (non-blocking, False when the command was not sent), read
counters from ``stats``.

Nothing is imported here: a bridge imports only the link kinds its config has (paho and aiomqtt are
~8 MB that a serial-only bridge never needs), from ``bridge.devices.serial_link`` /
``bridge.devices.mqtt_link``. Each link class says its kind in ``kind`` (a literal, so a check of it
narrows a ``SerialLink | MqttLink`` without importing the other class).
"""
