"""Pure logic of signal-bridge: no sockets, no event loop, no serial ports, no brokers.

Everything here takes decoded values in and hands back what to send, write or publish. The I/O
adapters (`bridge.client`, `bridge.session`, `bridge.devices`, ...) are thin pumps around it.
Importing any network or device library (asyncio, websockets, aiohttp, serial, paho, aiomqtt) from
this package is a bug; a test checks it.
"""
