"""Destinations for forwarding tests: Debian's nginx with the RTMP module, and a fake
destination that completes the RTMP publish and then never reads again."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.rtmp.session import PublishRequested, RtmpServerSession

NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[int]:
    if not NGINX_MODULE.exists():
        pytest.skip("libnginx-mod-rtmp is not installed")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""load_module {NGINX_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{ live on; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class StalledDestination:
    """Accepts one publisher, answers its handshake and publish, then stops reading."""

    RECEIVE_BUFFER = 4096

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.published = threading.Event()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.connections.append(conn)
        session = RtmpServerSession(peer="stalled")
        while not self.published.is_set():
            data = conn.recv(65536)
            if not data:
                return
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    session.accept_publish(event.stream_id)
                    self.published.set()
            conn.sendall(session.data_to_send())
        # From here on nothing is read: the client's socket fills up.

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def stalled_destination() -> Iterator[StalledDestination]:
    destination = StalledDestination()
    try:
        yield destination
    finally:
        destination.close()
