"""The session hub's I/O: the WebSocket endpoint (:mod:`~bridge.hub.server`), the links frames leave
through (:mod:`~bridge.hub.links`), the REST API (:mod:`~bridge.hub.rest`), plain-HTTP hygiene
(:mod:`~bridge.hub.http`), process guards (:mod:`~bridge.hub.guard`), the /metrics page
(:mod:`~bridge.hub.metrics`) and running it all
(:mod:`~bridge.hub.run`: ``start_hub``, ``sigbridge hub``). Every decision is taken by the sans-I/O
core, :mod:`bridge.core.hub`.

Start one with ``await bridge.hub.run.start_hub(config)`` (tests, demo) or ``sigbridge hub``.
"""
