"""Real redis-server processes on free 127.0.0.1 ports: one standalone, or a 3-node Redis Cluster.

Nothing on disk but a temp dir per node (no RDB, no AOF), removed on close. Missing redis-server (or the
``cluster`` extra's ``redis`` package) skips the test on a developer's machine only: as root or in CI
(``CI`` set) the set-up installs both, so their absence there is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.mosquitto import free_port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536 too."""
    for _ in range(200):
        port = free_port()
        if port < 55535 and _bindable(port + 10000):
            return port
    for port in range(20000 + os.getpid() % 20000, 55535, 7):
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def require_redis(*, module: bool = False) -> str:
    """The redis-server path; skips (developer machine) or fails (root / CI) when it or redis-py is absent.
    ``module=True``: called at the top of a test module, before it imports ``bridge.cluster``."""
    exe = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
        have_py = True
    except ImportError:
        have_py = False
    if exe and have_py and shutil.which("redis-cli"):
        return exe
    what = "redis-server (apt-get install -y redis-server)" if not exe else \
        "the cluster extra (pip install -e '.[cluster]')"
    if os.environ.get("CI") or os.geteuid() == 0:
        pytest.fail(f"{what} is missing: scripts/bootstrap.sh test installs it", pytrace=False)
    pytest.skip(f"needs {what}", allow_module_level=module)


class RedisNode:
    """One redis-server. ``stop()`` kills it (SIGKILL: nothing is written anywhere), ``start()`` brings
    it back on the same port, empty unless a cluster config file is in its dir."""

    def __init__(self, exe: str, workdir: Path, *, cluster: bool = False, port: int | None = None) -> None:
        self.exe = exe
        self.port = port or (cluster_port() if cluster else free_port())
        self.dir = workdir / str(self.port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.dir), "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                     "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout


class RedisSetup:
    """Standalone (one node) or a Redis Cluster of three primaries, in one temp dir."""

    def __init__(self, *, cluster: bool = False) -> None:
        self.exe = require_redis()
        self._tmp = tempfile.TemporaryDirectory(prefix="sigbridge-redis-")
        self.is_cluster = cluster
        self.nodes = [RedisNode(self.exe, Path(self._tmp.name), cluster=cluster)
                      for _ in range(3 if cluster else 1)]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(n.url for n in self.nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        if self.is_cluster:
            self._form_cluster()

    def _form_cluster(self, timeout: float = 15.0) -> None:
        # Slots by hand (ADDSLOTSRANGE) and MEET: no replicas, no waiting for redis-cli's checks.
        per = 16384 // len(self.nodes)
        for i, n in enumerate(self.nodes):
            hi = 16383 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            n.cli("CLUSTER", "ADDSLOTSRANGE", str(i * per), str(hi))
        for n in self.nodes[1:]:
            n.cli("CLUSTER", "MEET", "127.0.0.1", str(self.nodes[0].port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [n.cli("CLUSTER", "INFO") for n in self.nodes]
            if all("cluster_state:ok" in i and f"cluster_known_nodes:{len(self.nodes)}" in i for i in infos):
                return
            time.sleep(0.05)
        raise RuntimeError("the redis cluster did not form")

    def restart(self) -> None:
        """Kill every node and start them again empty (a cluster keeps its slot map in its nodes file)."""
        for n in self.nodes:
            n.stop()
        for n in self.nodes:
            n.start()
        if self.is_cluster:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
                    return
                time.sleep(0.05)
            raise RuntimeError("the redis cluster did not come back")

    def close(self) -> None:
        for n in self.nodes:
            n.stop()
        self._tmp.cleanup()


@contextlib.contextmanager
def running_redis(*, cluster: bool = False) -> Iterator[RedisSetup]:
    setup = RedisSetup(cluster=cluster)
    try:
        setup.start()
        yield setup
    finally:
        setup.close()


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def redis_setup(request: pytest.FixtureRequest) -> Iterator[RedisSetup]:
    """One Redis per test module and kind (the 3-node cluster takes ~2 s to form); see ``redis_urls``."""
    with running_redis(cluster=request.param == "cluster") as setup:
        yield setup


@pytest.fixture
def redis_urls(redis_setup: RedisSetup) -> tuple[str, ...]:
    """The module's Redis, emptied for this test (and running: a test may have killed it)."""
    for n in redis_setup.nodes:
        if n.proc is None or n.proc.poll() is not None:
            redis_setup.restart()
            break
    for n in redis_setup.nodes:
        n.cli("FLUSHALL")
    return redis_setup.urls
