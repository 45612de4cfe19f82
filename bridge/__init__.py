"""signal-bridge: drive serial and MQTT hardware from a Vonage-compatible signaling session."""

__version__ = "0.1.0"
