"""Bridge configuration: YAML -> the frozen dataclasses of `bridge.core.model`.

(Skeleton: the loader, validation with file:line errors and `sigbridge check` are being written.)
"""

from __future__ import annotations

from bridge.core.model import MqttDeviceConfig, SerialDeviceConfig

__all__ = ["MqttDeviceConfig", "SerialDeviceConfig"]
