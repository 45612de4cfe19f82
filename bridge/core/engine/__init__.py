"""The bridge engine (``engine.Engine``) and its parts: events in, commands out, no I/O.

Each part is one module holding one thing (the rule table, the params checker, the templates, the
safety state, the lease, ...); ``engine`` composes them. Everything a user of the engine needs is
re-exported here: ``from bridge.core.engine import Engine, WriteLine, ...``.
"""

from bridge.core.engine.engine import (
    ACK,
    CAPABILITIES,
    DESCRIBE,
    STATUS,
    Audit,
    Command,
    DeviceGate,
    Engine,
    Publish,
    Purge,
    SendSignal,
    WriteFrame,
    WriteLine,
)

__all__ = ["ACK", "CAPABILITIES", "DESCRIBE", "STATUS", "Audit", "Command", "DeviceGate", "Engine",
           "Publish", "Purge", "SendSignal", "WriteFrame", "WriteLine"]
