"""The receiving end of systemd's notify socket, for tests of sd_notify senders."""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator

import pytest

#: Linux's SO_TIMESTAMP (asm-generic value; Python's socket module does not export it).
SO_TIMESTAMP = 29


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)

    def recv(self, timeout: float) -> tuple[str, float]:
        """One datagram and its kernel receive time (seconds)."""
        self.sock.settimeout(timeout)
        data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
        stamp = time.time()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                sec, usec = struct.unpack("qq", raw[:16])
                stamp = sec + usec / 1e6
        return data.decode(), stamp

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)
