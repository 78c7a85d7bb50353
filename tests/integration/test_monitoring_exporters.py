"""The exporter provider with a real prometheus-postgres-exporter and a real server."""

from __future__ import annotations

import os
import signal
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra import config, hostctl
from infra.backends.local_exporters import ExporterProvider
from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.exporter import running_pid
from infra.render import monitoring as render_monitoring
from infra.schema.files import MigrationSet
from tests import ports
from tests.support import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def props_for(server: RunningServer, run_dir: Path) -> dict[str, Any]:
    port = ports.free_port()
    queries = run_dir / "queries.yaml"
    cmd = render_monitoring.postgres_exporter_command("127.0.0.1", port, str(queries))
    cfg = config.load({}, "t")
    return {
        "name": "postgres-exporter-primary", "run_dir": str(run_dir), "argv": list(cmd.argv),
        "listen": "127.0.0.1", "port": port,
        "files": {str(queries): render_monitoring.postgres_exporter_queries(
            cfg, MigrationSet.load(ROOT / "sql"))},
        # pg_hba admits TLS only; lib/pq verifies nothing with `require`, the stack verify-full.
        "secret_env": {"DATA_SOURCE_NAME": conninfo(server.superuser_dsn(), sslmode="require")},
    }


def metrics(props: dict[str, Any]) -> str:
    url = f"http://{props['listen']}:{props['port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def test_create_refresh_update_delete(pg_server: RunningServer, scratch: Path) -> None:
    provider = ExporterProvider()
    props = props_for(pg_server, scratch / "exporters")
    provider.create(props)
    try:
        pid = running_pid(props)
        assert pid is not None
        body = metrics(props)
        assert "pg_up 1" in body and "pgplatform_connections_max" in body
        # The password travels in the environment only: not in argv, not in the log.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert pg_server.password not in cmdline
        assert (provider.read("x", props).outs or {})["running"] is True
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        olds = provider.read("x", props).outs or {}
        assert olds["running"] is False
        assert provider.diff("x", olds, props).changes is True
        provider.update("x", olds, props)
        assert running_pid(props) not in (None, pid)
        assert "pg_up 1" in metrics(props)
    finally:
        provider.delete("x", props)
    assert running_pid(props) is None
    assert not hostctl.port_open("127.0.0.1", props["port"])
    log = (scratch / "exporters" / "postgres-exporter-primary.log").read_text()
    assert pg_server.password not in log


def test_a_taken_port_is_refused_with_the_key_to_change(pg_server: RunningServer,
                                                       scratch: Path) -> None:
    props = props_for(pg_server, scratch / "exporters")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", props["port"]))
        busy.listen()
        with pytest.raises(ProcessError, match=r"already in use.*postgres_exporter_port"):
            ExporterProvider().create(props)


def _connection_from(port: int) -> tuple[socket.socket, socket.socket]:
    """A live loopback connection whose client side has local port `port`: what a
    short-lived client of the stack can hold, since the exporters' ports lie in the
    kernel's ephemeral range. It is no listener, so the start's port check cannot see it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.socket()
    client.bind(("127.0.0.1", port))
    client.connect(server.getsockname())
    return server, client


def test_a_port_held_for_a_moment_by_a_client_connection_is_retried(
        pg_server: RunningServer, scratch: Path) -> None:
    props = props_for(pg_server, scratch / "exporters")
    server, client = _connection_from(props["port"])
    # The real exporter fails to bind while the connection lives; it ends during the retry.
    def close() -> None:
        client.close()
        server.close()

    release = threading.Timer(0.5, close)
    release.start()
    provider = ExporterProvider()
    try:
        created = provider.create(props)
        assert "# TYPE pg_up gauge" in metrics(props)
        assert "address already in use" in (scratch / "exporters" /
                                            "postgres-exporter-primary.log").read_text().lower()
    finally:
        release.join()
    assert created.outs is not None
    provider.delete(created.id, created.outs)


def test_a_port_held_for_good_fails_naming_the_log(pg_server: RunningServer,
                                                   scratch: Path) -> None:
    props = props_for(pg_server, scratch / "exporters")
    server, client = _connection_from(props["port"])
    try:
        # Three attempts, each in the log tail the error carries.
        three = r"(?s)exited with .* at start.*(bind: address already in use.*){3}"
        with pytest.raises(ProcessError, match=three):
            ExporterProvider().create(props)
    finally:
        client.close()
        server.close()
    assert running_pid(props) is None
