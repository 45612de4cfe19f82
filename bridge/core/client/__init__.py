"""The session client without I/O (the websockets/h11 style): :class:`ClientSession` takes hub frames
and the user's signals and hands back events and frames; the asyncio adapter is
:class:`bridge.client.SessionClient`.

- :mod:`.session`: :class:`ClientSession` (the calling contract is there);
- :mod:`.state`: the link state table (connecting, connected, reconnecting, closed);
- :mod:`.outbox`: ids, in-flight and queued signals, the tickets callers wait on, the seq filter;
- :mod:`.clock`: the hub clock estimate (min-RTT filtered, on the monotonic clock).
"""

from bridge.core.client.clock import ClockEstimator, ClockSample
from bridge.core.client.outbox import Outbox, Outgoing, SeqFilter, Ticket
from bridge.core.client.session import ClientSession, check_signal
from bridge.core.client.state import TRANSITIONS, LinkEvent, LinkMachine, LinkState, LinkStateError, Notice

__all__ = ["TRANSITIONS", "ClientSession", "ClockEstimator", "ClockSample", "LinkEvent",
           "LinkMachine", "LinkState", "LinkStateError", "Notice", "Outbox", "Outgoing", "SeqFilter",
           "Ticket", "check_signal"]
