"""The camera's pure parts: its signals (``signals``), who may watch (``viewers``), and the frame
code drawn into every synthetic frame (``framecode``). The I/O lives in ``bridge.camera``."""
