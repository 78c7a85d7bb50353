"""The dev HAProxy container's healthcheck, against a real HAProxy (Debian's 2.6) running a
config from the same renderer (infra/render/patroni.py, haproxy_cfg), with Patroni's REST
API stood in by two HTTPS servers on loopback: the probe passes only while the read-write
listener has a server up, i.e. while some node answers 200 on /primary over verified TLS.
`pulumi up` waits on that probe before it lets PgBouncer start (infra/backends/docker_patroni.py).
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.backends import docker_ha, docker_patroni
from infra.render import HostPaths
from infra.render.patroni import PatroniNode, ProxyTargets, haproxy_cfg
from tests import ports
from tests.support import scratch_dir, write_tls


class Rest(http.server.BaseHTTPRequestHandler):
    """Patroni's /primary: 200 on the leader, 503 elsewhere (`leader` is set per server)."""

    def do_GET(self) -> None:
        ok = self.path == "/primary" and self.server.leader  # type: ignore[attr-defined]
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


def serve(port: int, tls: object, leader: bool) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Rest)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)  # type: ignore[attr-defined]
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.leader = leader  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture()
def work() -> Iterator[Path]:
    path = scratch_dir("pgp-haprobe-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def probe(socket: Path) -> int:
    """The container's healthcheck command, with the socket at this test's path."""
    assert docker_ha.HAPROXY_SOCKET in docker_patroni.haproxy_probe()
    return subprocess.run(["sh", "-c", docker_patroni.haproxy_probe(str(socket))],
                          capture_output=True, timeout=30,
                          check=False).returncode


def wait_probe(socket: Path, want: int, proc: subprocess.Popen[bytes]) -> None:
    """Poll until the probe gives `want` (HAProxy checks every 200-500 ms); no wall-time
    assertion, a bound on attempts only."""
    for _ in range(300):
        assert proc.poll() is None, "haproxy exited"
        if probe(socket) == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"the probe never returned {want}")


def test_the_probe_follows_the_leader_on_a_real_haproxy(work: Path) -> None:
    tls = write_tls(work, ("127.0.0.1",))
    rest = [ports.free_port(), ports.free_port()]
    front = ports.free_run(2)
    nodes = [PatroniNode(name=f"pg-{i + 1}", host="127.0.0.1", port=ports.free_port(),
                         restapi_port=rest[i], paths=HostPaths("/x", "/x", None), pgpass="",
                         config_dir="/x") for i in range(2)]
    socket = work / "admin.sock"
    cfg = work / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(nodes, ProxyTargets("127.0.0.1", front, str(socket)), tls))
    servers = [serve(rest[0], tls, leader=False), serve(rest[1], tls, leader=False)]
    proc = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.1)
        wait_probe(socket, 1, proc)            # no leader: unhealthy
        servers[1].leader = True  # type: ignore[attr-defined]
        wait_probe(socket, 0, proc)            # pg-2 leads: healthy
        servers[1].leader = False  # type: ignore[attr-defined]
        wait_probe(socket, 1, proc)            # it stepped down: unhealthy again
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for srv in servers:
            srv.shutdown()
