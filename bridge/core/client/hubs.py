"""Which hub URL the session client dials next, when it was given several (a fleet of hubs sharing
sessions, ``docs/cluster.md``). Pure: the adapter asks :attr:`HubList.url`, dials it, and reports
what happened; nothing here opens a socket or reads a clock.

The rules:

- The first connect tries the URLs in the order given, each once (:meth:`HubList.first_failed`
  says whether one is left to try); the session starts on the first that answers.
- A dropped link moves to the next URL (:meth:`HubList.link_lost`): the hub that dropped us is the
  likeliest to be dead, and any hub of the fleet can resume the connection.
- A failed attempt moves to the next URL too (:meth:`HubList.attempt_failed`). A *round* is one
  attempt at each URL: within a round the next URL is dialled at once (:attr:`HubList.round_done`
  is False), and the backoff delay grows only between rounds, so a dead hub costs no wait and a
  whole fleet that is down is not hammered.
- With one URL every attempt is a whole round: the behaviour of a single-URL client is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable


def hub_urls(urls: str | Iterable[str]) -> tuple[str, ...]:
    """The URLs of a ``str`` (one URL, or several separated by commas) or of a list; whitespace around
    each is dropped, and so are repeats (the first stays). Raises ValueError for none, or an empty one."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a hub URL must be a string, got {type(item).__name__}")
        url = item.strip()
        if not url:
            raise ValueError("empty hub URL")
        if url not in out:
            out.append(url)
    if not out:
        raise ValueError("no hub URL")
    return tuple(out)


class HubList:
    """The hub URLs of one session client and the one to dial now (see the module docstring)."""

    __slots__ = ("_index", "_tried", "urls")

    def __init__(self, urls: str | Iterable[str]) -> None:
        self.urls = hub_urls(urls)
        self._index = 0
        #: Attempts since the current round started (a round: one attempt at each URL).
        self._tried = 0

    @property
    def url(self) -> str:
        """The URL to dial next (the one the current link is on, while connected)."""
        return self.urls[self._index]

    @property
    def round_done(self) -> bool:
        """Every URL was tried since the last link drop (or since the last round ended): wait the
        backoff delay before the next attempt; False: dial the next URL at once."""
        return self._tried == 0

    def first_failed(self) -> bool:
        """The first connect to :attr:`url` failed: move on. True when a URL is left to try."""
        self._advance()
        return self._index != 0

    def attempt_failed(self) -> None:
        """A reconnection attempt failed: the next attempt goes to the next URL."""
        self._advance()

    def link_lost(self) -> None:
        """The link dropped: a new round starts at the next URL."""
        self._index = (self._index + 1) % len(self.urls)
        self._tried = 0

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.urls)
        self._tried = (self._tried + 1) % len(self.urls)
