"""An etcd cluster of local members: start, health, stop.

Each member is one `etcd --config-file` process (rendered by infra/render/patroni.py)
with its data under the stack's state dir. Health is asked of etcd itself over
its TLS client port (GET /health with the platform's client certificate), so a
member that listens but has no quorum is not counted as healthy.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.foreground import ForegroundServer, wait_for
from infra.hostctl.net import port_open
from infra.render.patroni import EtcdMember
from infra.render.postgres import TlsFiles

ETCD = "/usr/bin/etcd"


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """Verify the server against the platform CA and present the platform certificate."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def key_exists(endpoints: Sequence[str], key: str, tls: TlsFiles) -> bool:
    """Whether `key` is in etcd, asked of the first endpoint that answers (v3 JSON gateway,
    the platform's client certificate); False when none answers."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "count_only": True}).encode()
    for url in endpoints:
        req = urllib.request.Request(f"{url}/v3/kv/range", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=tls_context(tls), timeout=2) as resp:
                return int(json.loads(resp.read()).get("count", 0)) > 0
        except (OSError, ValueError):
            continue
    return False


@dataclass(frozen=True)
class LocalMember:
    member: EtcdMember
    base: Path  # <state>/etcd/<name>: config, data, pid and log

    @property
    def config_file(self) -> Path:
        return self.base / "etcd.conf.yml"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def daemon(self) -> ForegroundServer:
        return ForegroundServer(argv=(ETCD, "--config-file", str(self.config_file)),
                      pid_file=self.base / "etcd.pid", log_file=self.base / "etcd.log")

    def healthy(self, tls: TlsFiles) -> bool:
        try:
            with urllib.request.urlopen(f"{self.member.client_url}/health",
                                        context=tls_context(tls), timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return str(body.get("health")) == "true"


@dataclass(frozen=True)
class EtcdCluster:
    members: tuple[LocalMember, ...]
    tls: TlsFiles

    def write(self, configs: Sequence[str]) -> None:
        """Write each member's rendered config (no secrets in it; still service-user only)."""
        for m, text in zip(self.members, configs, strict=True):
            make_dir(m.base.parent, 0o755)
            make_dir(m.base, 0o700)
            write_file(m.config_file, text, 0o600)

    def start(self, timeout: float = 30.0) -> None:
        """Start every member not running, then wait until each reports healthy."""
        for m in self.members:
            if not m.daemon.is_running():
                for host_port in ((m.member.host, m.member.client_port),
                                  (m.member.host, m.member.peer_port)):
                    if port_open(*host_port):
                        raise ProcessError(f"etcd {m.member.name}: {host_port[0]}:"
                                           f"{host_port[1]} is already in use")
                m.daemon.start()
        for m in self.members:
            try:
                wait_for(lambda m=m: m.healthy(self.tls), timeout=timeout,  # type: ignore[misc]
                           what=f"etcd {m.member.name} at {m.member.client_url} healthy",
                           interval=0.2)
            except ProcessError as exc:
                raise ProcessError(f"{exc}; log: {m.daemon.log_tail()}") from None

    def healthy_count(self) -> int:
        return sum(1 for m in self.members if m.healthy(self.tls))

    def stop(self) -> None:
        for m in self.members:
            m.daemon.stop()

    def remove(self) -> None:
        self.stop()
        for m in self.members:
            shutil.rmtree(m.base, ignore_errors=True)

    @property
    def endpoints(self) -> str:
        return ",".join(m.member.client_url for m in self.members)
