"""paho-mqtt's client module, imported without its optional dnspython.

paho imports ``dns.resolver`` when dnspython is installed, for MQTT-over-SRV lookups the bridge never
makes (it connects to the configured host and port); on a machine where something else brought
dnspython in, that import costs the bridge ~2.3 MB and ~8 % of its start-up. Imported first by every
module that imports aiomqtt or paho, so paho's ``try: import dns.resolver`` finds nothing; ``dns`` is
unblocked right after, so a later ``import dns`` elsewhere in the process works as usual.
"""

from __future__ import annotations

import sys

_BLOCK = "dns" not in sys.modules
if _BLOCK:
    sys.modules["dns"] = None  # type: ignore[assignment]  # None in sys.modules: ImportError on import
try:
    import paho.mqtt.client as paho
finally:
    if _BLOCK and "dns" in sys.modules and sys.modules["dns"] is None:
        del sys.modules["dns"]

__all__ = ["paho"]
